"""The one thread of a server process that runs the model: loading, prompt registration and every batch.

PyTorch's CPU ops run their parallel parts on GNU OpenMP, which keeps one team of worker threads for each
thread that has started a parallel region. Once two such teams exist and libgomp manages more threads than
there are CPUs, it stops spinning between regions: every parallel op then waits for its workers to wake up,
a fixed cost that small ops feel most. On the 2-core machines here (Intel Xeon with AMX, 2026-12-04;
benchmarks/thread_penalty.py, results/thread_penalty.json):

    [1, 576] x [576, 1536] linear (a decode step's matmul)   bf16: main thread 57 us, a later thread 145 us (2.6x)
                                                             fp32: 35 us vs 140 us (4.0x)
    the same at 640 rows (a training micro-batch)            1.18x (bf16), 1.04x (fp32)
    greedy decoding, one request at a time, 24 tokens        the loading thread 23.5 tokens/s, a worker 14.3

A server that loads the model on its main thread and runs batches on a worker thread is the second case on
every op (`softprompt serve` decoded at the worker's 14 tokens/s). Here the worker is the only thread that
ever runs the model: `serve()` loads and registers on it, and the batcher submits every batch and reload to
it. Large ops (prefill, training-sized matmuls) hardly notice, which is why only decoding showed it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def compute_executor() -> ThreadPoolExecutor:
    """The process's single model thread (created on first use, kept for the life of the process: a second
    one would be a second OpenMP team). Batchers share it, so one server's batches never overlap."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="softprompt-engine")
        return _executor


def on_compute_thread(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` on the model thread and wait for it (startup work: loading the model, registering
    prompts); its exception is raised here."""
    return compute_executor().submit(fn, *args).result()
