"""The serving batcher's continuous decoding (serve/batcher.py): requests that arrive while a long generation
runs join it at the next step and finish first; classify requests are not held behind it; answers equal the
engine's static `generate`; a bad job among them gets its own error."""

from __future__ import annotations

import asyncio
import time

import pytest
from tiny import tiny_causal

from softprompt.scoring import continuous
from softprompt.serve.batcher import Batcher
from softprompt.serve.engine import Engine, EngineError, GenerateRequest
from softprompt.training.init import make_prompt


@pytest.fixture(scope="module")
def engine():
    fm = tiny_causal()
    engine = Engine(fm)
    engine.add("a", make_prompt(fm, 3, "random-uniform", seed=1, scale=5.0), ["yes", "no"])
    engine.add("b", make_prompt(fm, 5, "random-uniform", seed=2, scale=5.0), ["good", "bad"])
    return engine


def slow_steps(monkeypatch, seconds):
    step = continuous.RunningBatch.step

    def slowed(self):
        time.sleep(seconds)
        return step(self)

    monkeypatch.setattr(continuous.RunningBatch, "step", slowed)


def request(task, text, n):
    return GenerateRequest(task, text, n, stop_at_newline=False, stop_at_eos=False)


def test_arrivals_join_the_running_batch_and_leave_when_done(engine, monkeypatch):
    slow_steps(monkeypatch, 0.01)
    long = request("a", "the movie was", 60)
    short = [request("b", "a terrible film", 3), request("a", "what", 5)]
    finished: dict[str, float] = {}

    async def main():
        batcher = Batcher(engine, max_batch_size=8, max_wait_ms=1)
        batcher.start()

        async def timed(name, coro):
            out = await coro
            finished[name] = time.monotonic()
            return out

        first = asyncio.create_task(timed("long", batcher.generate([long])))
        await asyncio.sleep(0.15)  # the long request is decoding now
        later = await asyncio.gather(timed("short", batcher.generate(short)),
                                     timed("classify", batcher.classify([("a", "the movie")])))
        out = await first
        stats = batcher.stats
        await batcher.stop()
        return out, later, stats

    out, (texts, labels), stats = asyncio.run(main())
    assert finished["short"] < finished["long"] and finished["classify"] < finished["long"]
    assert out == engine.generate([long]) and texts == engine.generate(short)
    assert labels[0].label == engine.classify([("a", "the movie")])[0].label
    assert stats.examples == 4


def test_a_bad_job_gets_its_own_error_and_static_batching_gives_the_same_answers(engine):
    good = [request("a", "the movie was", 6), request("b", "what", 4)]

    async def main(continuous_batching):
        batcher = Batcher(engine, max_batch_size=8, max_wait_ms=20, continuous=continuous_batching)
        batcher.start()
        results = await asyncio.gather(batcher.generate(good[:1]), batcher.generate([request("nope", "x", 3)]),
                                       batcher.generate(good[1:]), return_exceptions=True)
        await batcher.stop()
        return results

    for mode in (True, False):
        first, bad, second = asyncio.run(main(mode))
        assert isinstance(bad, EngineError) and "unknown task 'nope'" in str(bad)
        assert first + second == engine.generate(good)


def test_the_running_batch_holds_at_most_max_running_requests_beyond_max_batch_size(engine, monkeypatch):
    sizes: list[int] = []
    step = continuous.RunningBatch.step

    def counted(self):
        sizes.append(len(self))
        time.sleep(0.005)  # arrivals have time to queue while the batch runs
        return step(self)

    monkeypatch.setattr(continuous.RunningBatch, "step", counted)
    reqs = [request("a" if i % 2 else "b", f"input {i}", 12) for i in range(7)]

    async def main():
        batcher = Batcher(engine, max_batch_size=2, max_wait_ms=0, max_running=5)
        batcher.start()
        out = await asyncio.gather(*(batcher.generate([r]) for r in reqs))
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert max(sizes) == 5  # more than max_batch_size (2) decode together, never more than max_running
    assert [o[0] for o in out] == engine.generate(reqs)


def test_a_prefill_that_fails_fails_only_its_own_job(engine, monkeypatch):
    fill = continuous.fill_cached

    def fragile(fm, ids, states):
        if any(len(x) > 40 for x in ids):  # the one long input below
            raise RuntimeError("prefill broke")
        return fill(fm, ids, states)

    monkeypatch.setattr(continuous, "fill_cached", fragile)
    slow_steps(monkeypatch, 0.01)
    good = [request("a", "the movie was", 8), request("b", "what", 4), request("a", "fine", 5)]
    bad = request("b", " ".join(["long words"] * 30), 3)

    async def main():
        batcher = Batcher(engine, max_batch_size=8, max_wait_ms=20)
        batcher.start()
        results = await asyncio.gather(*(batcher.generate([r]) for r in (good[0], bad, good[1], good[2])),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    first, broken, second, third = asyncio.run(main())
    assert isinstance(broken, RuntimeError) and "prefill broke" in str(broken)
    assert first + second + third == engine.generate(good)
