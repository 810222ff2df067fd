"""Micro-batching: gather concurrent requests (any mix of tasks) into one engine call on one worker thread.

    HTTP handlers ──submit(job)──▶ pending deque ──▶ batch loop (event loop) ──run_in_executor──▶ worker thread
         ▲                                              │ waits ≤ max_wait_ms after the                │ engine.classify
         └──────────── future.set_result ◀──────────────┘ oldest job, or until max_batch_size ◀───────┘ engine.generate

- The event loop never runs the model: only the single worker thread does, so handlers stay responsive
  (health checks, 4xx answers) while a batch runs.
- Everything that touches the engine runs on that same thread (batches, `call(engine.reload)`), so a reload
  can never swap prompts in the middle of a batch, and the tokenizer is never used from two threads.
- The wait is measured from the *oldest* queued job: under load, jobs that arrived while the previous batch
  ran go out at once; an idle server adds at most `max_wait_ms` to a lone request.
- A batch holds up to `max_batch_size` examples (one classify request with N inputs counts N); a job is
  never split, so a single request larger than that forms a batch of its own (the engine chunks it).
- A job not started within `queue_timeout_s` fails with `QueueTimeout` (the app answers 503); more than
  `max_queued` examples waiting fail new jobs at once with `QueueFull` (also 503): back-pressure, not OOM.
- One bad job never fails its neighbours: when a mixed engine call raises, its jobs are retried one by one
  and only the culprit gets the error.
- Generation is batched continuously (`continuous=True`, the default; `scoring.continuous`): the worker
  decodes one token for every running request a step and, between steps, takes newly queued generate jobs
  into the running batch (up to `max_running` requests) and runs classify jobs that have waited
  `max_wait_ms`, so an arrival starts at the next step instead of after the whole batch, and a request
  leaves as soon as it is done. Requests the engine cannot run that way (no prompt, Gemma's windowed
  attention, seq2seq) take the static path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from softprompt.errors import SoftpromptError
from softprompt.scoring.continuous import DecodeRow, RunningBatch
from softprompt.serve.compute_thread import compute_executor
from softprompt.serve.engine import ClassifyRequest, Engine, GenerateRequest

log = logging.getLogger("softprompt.serve")

Kind = Literal["classify", "generate"]


class QueueTimeout(SoftpromptError):
    """The job waited longer than `queue_timeout_s` before a worker took it."""


class QueueFull(SoftpromptError):
    """Too many examples are already waiting."""


@dataclass(eq=False)
class Job:
    """One HTTP request's work: its examples, and the future its handler awaits."""

    kind: Kind
    items: list[Any]  # ClassifyRequest | GenerateRequest
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    started: bool = False
    abandoned: bool = False  # the handler gave up (timeout, client gone): skip it


@dataclass
class BatchStats:
    """Counters for /healthz: batches run, examples run, the largest batch seen."""

    batches: int = 0
    examples: int = 0
    largest: int = 0


class Batcher:
    """Run engine work in mixed-task micro-batches on one worker thread.

    Args:
        engine: the engine; only the worker thread touches it.
        max_batch_size: examples per engine call (jobs are whole: one large job may exceed it alone).
        max_wait_ms: how long the oldest queued job may wait for company.
        queue_timeout_s: a job not started by then fails with QueueTimeout.
        max_queued: examples allowed to wait; beyond it, submit raises QueueFull at once.
        check: called on the worker thread for every job before its batch runs (e.g. token limits,
            unknown tasks); an exception it raises becomes that job's error only.
        continuous: batch generation continuously (see the module docstring); False: static micro-batches.
        max_running: requests decoding at once in the continuous batch (vLLM's max_num_seqs): a decode step
            reads every weight once whatever its row count, so rows are cheap; bounded for the KV memory.
    """

    def __init__(
        self, engine: Engine, *, max_batch_size: int = 16, max_wait_ms: float = 10.0, queue_timeout_s: float = 30.0,
        max_queued: int = 4096, check: Callable[[Job], None] | None = None, continuous: bool = True,
        max_running: int = 64,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0 or queue_timeout_s <= 0 or max_queued < 1 or max_running < 1:
            raise ValueError(f"bad batcher settings: max_batch_size={max_batch_size}, max_wait_ms={max_wait_ms}, "
                             f"queue_timeout_s={queue_timeout_s}, max_queued={max_queued}, max_running={max_running}")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue_timeout_s = queue_timeout_s
        self.max_queued = max_queued
        self.check = check
        self.continuous = continuous
        self.max_running = max_running
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._queued = 0  # examples in _pending
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False  # the worker stops taking jobs from the queue (stop() is waiting for it)
        # The process's one model thread (compute_thread.py: a second thread running ops makes small ops slow).
        self._executor = compute_executor()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the batch loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="softprompt-batcher")

    async def stop(self) -> None:
        """Stop taking batches, fail what is still queued, let the running batch finish."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(QueueTimeout("server is shutting down"))
        # Wait for the running batch; the thread itself stays (shared by the process: compute_thread.py).
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        """Examples waiting for the worker."""
        return self._queued

    # ------------------------------------------------------------------------------------------ submitting

    async def classify(self, requests: list[ClassifyRequest]) -> list:
        """Classifications for `requests`, in order (run in some micro-batch)."""
        return await self._submit("classify", requests)

    async def generate(self, requests: list[GenerateRequest]) -> list[str]:
        """Generated texts for `requests`, in order."""
        return await self._submit("generate", requests)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the worker thread, between batches (e.g. `engine.reload`)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _submit(self, kind: Kind, items: list) -> list:
        if self._wakeup is None or not self.alive:
            raise RuntimeError("batcher is not running")
        if self._queued + len(items) > self.max_queued:
            raise QueueFull(f"{self._queued} examples are already queued (max_queued={self.max_queued}); retry later")
        job = Job(kind, list(items), asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._queued += len(job.items)
        self._wakeup.set()
        try:
            done, _ = await asyncio.wait({job.future}, timeout=self.queue_timeout_s)
            if not done and not job.started:
                self._abandon(job)
                raise QueueTimeout(f"request waited more than queue_timeout_s={self.queue_timeout_s:g} s in the queue")
            return await job.future  # started: it finishes with its batch
        except asyncio.CancelledError:  # client went away
            self._abandon(job)
            raise

    def _abandon(self, job: Job) -> None:
        job.abandoned = True
        if job in self._pending:
            self._pending.remove(job)
            self._queued -= len(job.items)

    # ------------------------------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if not jobs:
                continue
            for job in jobs:
                job.started = True
            try:
                results = await loop.run_in_executor(self._executor, self._run, jobs, loop)
            except Exception as err:  # noqa: BLE001 — never let the loop die; the jobs get the error
                log.exception("batch failed")
                results = [err] * len(jobs)
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def _next_batch(self) -> list[Job]:
        assert self._wakeup is not None
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._pending[0].enqueued + self.max_wait_s
        while self._queued < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break
            if not self._pending:  # everything queued was abandoned meanwhile
                return []
        now, jobs, size = time.monotonic(), [], 0
        while self._pending:
            job = self._pending[0]
            if jobs and size + len(job.items) > self.max_batch_size:
                break
            self._pending.popleft()
            self._queued -= len(job.items)
            if job.abandoned or job.future.done():
                continue
            if now - job.enqueued > self.queue_timeout_s:
                job.future.set_exception(QueueTimeout(
                    f"request waited more than queue_timeout_s={self.queue_timeout_s:g} s in the queue"))
                continue
            jobs.append(job)
            size += len(job.items)
        return jobs

    # ------------------------------------------------------------------------------------------ worker thread

    def _run(self, jobs: list[Job], loop: asyncio.AbstractEventLoop | None = None) -> list[Any]:
        """On the worker thread: check each job, then one engine call per kind over all good jobs (generation:
        the continuous decoder when on and `loop` is given; it settles jobs itself as they finish)."""
        results: list[Any] = [None] * len(jobs)
        good: dict[Kind, list[int]] = {"classify": [], "generate": []}
        for i, job in enumerate(jobs):
            try:
                if self.check is not None:
                    self.check(job)
                good[job.kind].append(i)
            except Exception as err:  # noqa: BLE001 — the job's own error, answered as 4xx by the app
                results[i] = err
        for kind, idx in good.items():
            if kind == "generate" and idx and self.continuous and loop is not None:
                for i, result in zip(idx, self._decode([jobs[i] for i in idx], loop), strict=True):
                    results[i] = result
            elif idx:
                self._static(kind, jobs, idx, results)
        self._count(sum(len(j.items) for j in jobs))
        return results

    def _static(self, kind: Kind, jobs: list[Job], idx: list[int], results: list[Any]) -> None:
        """One engine call over jobs `idx` of one kind; when it raises, one call per job (the culprit's error)."""
        run = self.engine.classify if kind == "classify" else self.engine.generate
        try:
            outputs = run([item for i in idx for item in jobs[i].items])
        except Exception:  # noqa: BLE001 — find the culprit: one job at a time
            for i in idx:
                try:
                    results[i] = run(jobs[i].items)
                except Exception as err:  # noqa: BLE001
                    results[i] = err
            return
        start = 0
        for i in idx:
            results[i] = outputs[start: start + len(jobs[i].items)]
            start += len(jobs[i].items)

    def _count(self, size: int) -> None:
        self.stats.batches += 1
        self.stats.examples += size
        self.stats.largest = max(self.stats.largest, size)

    # ------------------------------------------------------------------------------------------ continuous decoding

    def _decode(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> list[Any]:
        """Decode `jobs` in one running batch that takes newly queued generate jobs between steps (and runs
        classify jobs that are due); returns `jobs`' results. Jobs taken from the queue are settled as they
        finish; the ones given are returned (the batch loop settles them) but also settled as they finish."""
        batch, results = RunningBatch(self.engine.fm), [None] * len(jobs)
        waiting: deque[tuple[Job, int | None]] = deque((job, k) for k, job in enumerate(jobs))
        while True:
            joining: list[tuple[Job, int | None, list[DecodeRow]]] = []
            size = len(batch)
            while waiting and (not size or size + len(waiting[0][0].items) <= self.max_running):
                job, k = waiting.popleft()
                rows = self._rows(job, k, results, loop)
                if rows:
                    joining.append((job, k, rows))
                    size += len(rows)
            self._admit(batch, joining, results, loop)
            if not len(batch) and not waiting:
                return results
            try:
                batch.step()
            except Exception as err:  # noqa: BLE001 — the running jobs get the error; the worker goes on
                log.exception("decode step failed")
                for row in batch.rows:
                    if row.on_done is not None:
                        row.on_done(err)  # type: ignore[arg-type]
                batch = RunningBatch(self.engine.fm)
            # Between two steps: arrivals that fit, and classify jobs that are due. The queue is read on the event
            # loop (a round trip from this thread that waits for the loop to be free), so it is asked only when it
            # holds something: an empty deque's length is safe to read from here, and a job queued just after
            # the check is taken at the next step.
            if not self._stopping and self._pending:
                room = self.max_running - len(batch) - sum(len(j.items) for j, _ in waiting)
                fresh, due = self._pull(loop, max(0, room))
                waiting.extend((job, None) for job in fresh)
                if due:  # classify jobs that waited max_wait_ms run now, not after the whole decode
                    for job, result in zip(due, self._run(due), strict=True):
                        self._settle(loop, job, result)

    def _rows(self, job: Job, k: int | None, results: list[Any], loop: asyncio.AbstractEventLoop) -> list[DecodeRow]:
        """One job's requests as rows of the running batch, each settling the job's future when the last one
        finishes (result k of the given jobs, if it is one); [] where the job ran statically (the engine says so)
        or failed its check (it is settled then)."""
        texts: list[Any] = [None] * len(job.items)
        left = [len(job.items)]

        def done(i: int, tokens: list[int] | BaseException) -> None:
            texts[i] = tokens if isinstance(tokens, BaseException) else self.engine.text(tokens)
            left[0] -= 1
            if left[0] == 0:
                error = next((t for t in texts if isinstance(t, BaseException)), None)
                result = error if error is not None else texts
                if k is not None:
                    results[k] = result
                self._settle(loop, job, result)

        try:
            if k is None and self.check is not None:  # taken from the queue: not checked yet
                self.check(job)
            rows: list[DecodeRow] | None = self.engine.decode_rows(job.items, done)
            if rows is None:
                out: list[Any] = [None]
                self._static("generate", [job], [0], out)
                if k is not None:
                    results[k] = out[0]
                self._settle(loop, job, out[0])
                return []
        except Exception as err:  # noqa: BLE001 — this job's own error (4xx), its neighbours go on
            self._fail(job, k, err, results, loop)
            return []
        if k is None:
            self._count(len(job.items))
        return rows

    def _admit(self, batch: RunningBatch, joining: list[tuple[Job, int | None, list[DecodeRow]]],
               results: list[Any], loop: asyncio.AbstractEventLoop) -> None:
        """Prefill the joining jobs' rows in one call (`RunningBatch.admit` groups them by length); if it fails
        (it changes nothing then), job by job, so that only the culprit gets the error."""
        if not joining:
            return
        try:
            batch.admit([row for _, _, rows in joining for row in rows])
            return
        except Exception:  # noqa: BLE001 — it changed nothing: retried one job at a time below
            log.debug("joint prefill failed; admitting job by job", exc_info=True)
        for job, k, rows in joining:
            try:
                batch.admit(rows)
            except Exception as err:  # noqa: BLE001 — this job's own error, its neighbours go on
                self._fail(job, k, err, results, loop)

    def _fail(self, job: Job, k: int | None, err: BaseException, results: list[Any],
              loop: asyncio.AbstractEventLoop) -> None:
        """Settle `job` with its own error (result k of the given jobs, if it is one)."""
        if k is not None:
            results[k] = err
        self._settle(loop, job, err)

    def _pull(self, loop: asyncio.AbstractEventLoop, room: int) -> tuple[list[Job], list[Job]]:
        """From the worker thread: queued generate jobs that fit `room`, and classify jobs that are due."""
        try:
            return asyncio.run_coroutine_threadsafe(self._take(room), loop).result(timeout=5.0)
        except Exception:  # noqa: BLE001 — the loop is closing or busy: no new work this step
            return [], []

    async def _take(self, room: int) -> tuple[list[Job], list[Job]]:
        """On the event loop: take generate jobs (whole, up to `room` requests) and due classify jobs (up to
        `max_batch_size` examples) out of the queue; expired and abandoned jobs are dropped as usual."""
        now, fresh, due, size, examples = time.monotonic(), [], [], 0, 0
        for job in list(self._pending):
            if job.abandoned or job.future.done():
                self._drop(job)
            elif now - job.enqueued > self.queue_timeout_s:
                self._drop(job)
                job.future.set_exception(QueueTimeout(
                    f"request waited more than queue_timeout_s={self.queue_timeout_s:g} s in the queue"))
            elif job.kind == "generate" and size + len(job.items) <= room:
                fresh.append(job)
                size += len(job.items)
            elif (job.kind == "classify" and now - job.enqueued >= self.max_wait_s
                  and (not due or examples + len(job.items) <= self.max_batch_size)):
                due.append(job)
                examples += len(job.items)
        for job in fresh + due:
            self._drop(job)
            job.started = True
        return fresh, due

    def _drop(self, job: Job) -> None:
        """Take `job` out of the queue (event loop only)."""
        self._pending.remove(job)
        self._queued -= len(job.items)

    @staticmethod
    def _settle(loop: asyncio.AbstractEventLoop, job: Job, result: Any) -> None:
        """From the worker thread: give `job` its result (or error) on the event loop, unless it has one."""
        def settle() -> None:
            if not job.future.done():
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits for the answer any more
            pass
