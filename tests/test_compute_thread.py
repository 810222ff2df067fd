"""The server runs the model on one thread only (serve/compute_thread.py): a second thread running ops made
every small op ~2-3x slower (benchmarks/thread_penalty.py), so loading, registration and batches share it."""

from __future__ import annotations

import asyncio
import threading

import pytest
import uvicorn
from tiny import tiny_causal

from softprompt.serve import Engine
from softprompt.serve.app import serve
from softprompt.serve.batcher import Batcher
from softprompt.serve.compute_thread import compute_executor, on_compute_thread
from softprompt.serve.engine import GenerateRequest
from softprompt.training.init import make_prompt


@pytest.fixture(scope="module")
def fm():
    return tiny_causal()


def test_serve_loads_and_registers_on_the_thread_that_runs_batches(fm, tmp_path, monkeypatch):
    make_prompt(fm, 4, "random-uniform").save(tmp_path / "sst2.safetensors")
    seen: dict[str, int] = {}

    def fake_load(name, **_):
        seen["load"] = threading.get_ident()
        return fm

    monkeypatch.setattr("softprompt.model.loading.load_model", fake_load)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: seen.setdefault("uvicorn", threading.get_ident()))
    serve("tiny", tmp_path, port=0, log_level="warning")
    compute = on_compute_thread(threading.get_ident)
    assert seen["load"] == compute != threading.get_ident()
    assert seen["uvicorn"] == threading.get_ident()  # the event loop stays on the caller's thread


def test_batches_and_calls_run_on_the_compute_thread_and_outlive_a_stopped_batcher(fm, tmp_path):
    make_prompt(fm, 4, "random-uniform").save(tmp_path / "sst2.safetensors")
    engine = Engine(fm, tmp_path)

    async def one_batcher() -> tuple[int, list]:
        batcher = Batcher(engine, max_wait_ms=0)
        batcher.start()
        try:
            ident = await batcher.call(threading.get_ident)
            texts = await batcher.generate([GenerateRequest("sst2", "a b c", 2)])
        finally:
            await batcher.stop()
        return ident, texts

    first, texts = asyncio.run(one_batcher())
    second, again = asyncio.run(one_batcher())  # the shared thread survives stop(): a later server still runs
    assert first == second == on_compute_thread(threading.get_ident)
    assert texts == again and len(texts) == 1
    assert compute_executor() is compute_executor()
