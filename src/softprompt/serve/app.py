"""The HTTP API: many prompt-tuned tasks on one frozen model, behind FastAPI (`softprompt serve`).

    POST /v1/classify   {"task": "sst2", "inputs": ["a gem .", "dull"]}  -> label + probabilities per input
    POST /v1/generate   {"task": "squad", "input": "...", "max_new_tokens": 16} -> greedy continuation
    GET  /v1/tasks      tasks served (P, label words, metrics) and files skipped with the reason
    GET  /v1/tasks/{task}
    GET  /healthz       200 while the batch worker runs; /docs and /openapi.json describe it all

Requests are answered through `batcher.Batcher` (mixed-task micro-batches on one worker thread). Errors are
always JSON `{"error": {"type", "message", "limit"?, "maximum"?, "value"?}}`:

    413  body larger than max_body_bytes (checked before the body is parsed)
    422  malformed JSON, wrong types, bad task name; and every other limit: max_inputs, max_input_tokens,
         max_new_tokens, the model's context size (`limit` names which)
    404  unknown task (or unknown path)
    503  queued longer than queue_timeout_s, or more than max_queued examples waiting

Prompts are published by writing `NAME.safetensors.tmp` (any name not ending in `.safetensors`) and renaming
it to `NAME.safetensors`: a rename is atomic, so the server sees the old file or the new one, never half.
Files are rescanned every `reload_interval_s` and on each GET /v1/tasks; a corrupt file, a prompt for another
base model, or a file whose stem is not a valid task name is skipped, logged and listed under `skipped`.
Task names never become paths: they are matched against the registry, after the TASK_NAME pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from softprompt import __version__
from softprompt.errors import SoftpromptError, UsageError
from softprompt.scoring import InputTooLongError
from softprompt.serve.batcher import Batcher, Job, QueueFull, QueueTimeout
from softprompt.serve.engine import ClassifyRequest, Engine, EngineError, GenerateRequest

log = logging.getLogger("softprompt.serve")

TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


@dataclass
class ServeSettings:
    """Server limits and batching knobs (each is a `softprompt serve --flag`)."""

    max_batch_size: int = 16
    """Examples per micro-batch (one engine forward)."""
    max_wait_ms: float = 10.0
    """How long the oldest queued request waits for others to join its batch."""
    max_input_tokens: int = 512
    """Tokens per input text; longer inputs are refused (422), never silently cut."""
    max_inputs: int = 64
    """Inputs per /v1/classify request."""
    max_body_bytes: int = 1_000_000
    """Request body size; larger bodies get 413 before any parsing."""
    max_new_tokens: int = 64
    """Upper bound (and default) for /v1/generate's max_new_tokens."""
    queue_timeout_s: float = 30.0
    """A request not started by then gets 503."""
    max_queued: int = 4096
    """Examples allowed to wait; beyond it new requests get 503 at once."""
    reload_interval_s: float = 2.0
    """Rescan the prompts directory this often (0: only on GET /v1/tasks)."""

    def __post_init__(self) -> None:
        positive = ("max_batch_size", "max_input_tokens", "max_inputs", "max_body_bytes", "max_new_tokens",
                    "queue_timeout_s", "max_queued")
        bad = [f"{k}={getattr(self, k)}" for k in positive if not getattr(self, k) > 0]
        bad += [f"{k}={getattr(self, k)}" for k in ("max_wait_ms", "reload_interval_s") if getattr(self, k) < 0]
        if bad:
            raise ServeSettingsError(f"server settings must be positive (waits: >= 0); got {', '.join(bad)}")


class ServeSettingsError(UsageError):
    """A limit or batching setting that cannot work (the message shows the values)."""


# ------------------------------------------------------------------------------------------------- schemas


def _encodable(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); the tokenizer cannot take them: refuse as bad input.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


TaskName = Annotated[str, StringConstraints(pattern=TASK_NAME), Field(
    description="A task served by this server (a prompt file's stem); see GET /v1/tasks.", examples=["sst2"])]
Text = Annotated[str, AfterValidator(_encodable)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClassifyBody(_Body):
    task: TaskName
    inputs: list[Text] = Field(min_length=1, description="Texts to label (at most max_inputs).",
                               examples=[["sentence : a gem of a movie ."]])


class GenerateBody(_Body):
    task: TaskName
    input: Text = Field(description="Text to continue.", examples=["question : who wrote hamlet ? answer :"])
    max_new_tokens: int | None = Field(default=None, ge=1, description="Tokens to generate at most "
                                       "(default and upper bound: the server's max_new_tokens).")


class Prediction(BaseModel):
    label: str = Field(description="The most likely label word.")
    probabilities: dict[str, float | None] = Field(description="Softmax over the label words' log-likelihoods.")
    scores: dict[str, float | None] = Field(description="Summed log-likelihood of each label word.")


class ClassifyResponse(BaseModel):
    task: str
    predictions: list[Prediction]


class GenerateResponse(BaseModel):
    task: str
    output: str


class TaskInfo(BaseModel):
    name: str
    prompt_length: int = Field(description="P: prompt vectors.")
    hidden_size: int = Field(description="H.")
    label_words: list[str] | None
    metrics: Any = Field(default=None, description="The prompt file's recorded metrics, if any.")
    init: Any = None
    base_model: Any = None
    file: str | None = None


class SkippedFile(BaseModel):
    file: str
    reason: str


class TasksResponse(BaseModel):
    model: str
    tasks: list[TaskInfo]
    skipped: list[SkippedFile]


class Health(BaseModel):
    status: str
    model: str
    version: str
    tasks: int
    queued: int
    batches: int
    examples: int


class ErrorDetail(BaseModel):
    type: str
    message: str
    limit: str | None = None
    maximum: int | None = None
    value: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(SoftpromptError):
    """An error answered as JSON with `status`; `limit` names the setting that was exceeded."""

    def __init__(self, status: int, type_: str, message: str, *, limit: str | None = None,
                 maximum: int | None = None, value: int | None = None) -> None:
        super().__init__(message)
        self.status, self.detail = status, ErrorDetail(type=type_, message=message, limit=limit, maximum=maximum,
                                                       value=value)


def _limit(name: str, value: int, maximum: int, what: str) -> ApiError:
    return ApiError(422, "limit_exceeded", f"{what}: {value} > {name}={maximum}", limit=name, maximum=maximum,
                    value=value)


def _error(status: int, detail: ErrorDetail) -> JSONResponse:
    return JSONResponse({"error": detail.model_dump(exclude_none=True)}, status_code=status)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        404: "Unknown task.", 413: "Body larger than max_body_bytes.",
        422: "Malformed body, bad task name, or a limit exceeded (`limit` names it).",
        503: "Queued longer than queue_timeout_s, or the queue is full."}.items()
}


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: replace them (in metadata from user files, or -inf scores) with null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------- body limit


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413 before the app parses anything.

    Checks Content-Length up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, int(declared))
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, send, size)
                return
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, size: int) -> None:
        detail = ErrorDetail(type="limit_exceeded", message=f"request body: {size} bytes > max_body_bytes="
                             f"{self.max_bytes}", limit="max_body_bytes", maximum=self.max_bytes, value=size)
        await _error(413, detail)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


# ------------------------------------------------------------------------------------------------- the app


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app for `engine`; the batcher and the reload loop start with the app's lifespan."""
    settings = settings or ServeSettings()
    tokenizer = engine.fm.tokenizer

    def check(job: Job) -> None:  # on the worker thread, right before the job's batch: the registry is current
        tasks = engine.tasks
        for item in job.items:
            entry = tasks.get(item.task)
            if entry is None:
                raise ApiError(404, "unknown_task", f"unknown task {item.task!r}; see GET /v1/tasks")
            if job.kind == "classify" and not entry.label_words:
                raise ApiError(422, "no_label_words", f"task {item.task!r} has no label words in its prompt file")
            n = len(tokenizer(item.text, add_special_tokens=False).input_ids)
            if n > settings.max_input_tokens:
                raise _limit("max_input_tokens", n, settings.max_input_tokens, "input tokens")

    batcher = Batcher(engine, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                      queue_timeout_s=settings.queue_timeout_s, max_queued=settings.max_queued, check=check)

    async def reload() -> None:
        try:
            report = await batcher.call(engine.reload)
        except Exception as err:  # noqa: BLE001 — e.g. the directory was removed: keep serving what is loaded
            log.error("reload failed: %s", err)
            return
        for name in report.loaded:
            if _valid_name(name):
                log.info("loaded task %r", name)
            else:
                log.warning("not serving %r: not a valid task name (pattern %s); rename the file", name, TASK_NAME)
        for name in report.removed:
            log.info("removed task %r (file deleted)", name)
        for file, reason in report.skipped.items():
            log.warning("skipped %s: %s", file, reason)

    async def reload_loop() -> None:
        while True:
            await asyncio.sleep(settings.reload_interval_s)
            await reload()  # never raises: failures are logged and the loop keeps rescanning

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        looping = asyncio.create_task(reload_loop()) if settings.reload_interval_s > 0 else None
        log.info("serving %d task(s) on model %s", len(engine.tasks), engine.fm.name)
        try:
            yield
        finally:
            if looping is not None:
                looping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await looping
            await batcher.stop()

    limits = "\n".join(f"- `{k}` = {v}" for k, v in asdict(settings).items())
    app = FastAPI(title="softprompt", version=__version__, lifespan=lifespan,
                  description=f"Prompt-tuned tasks on one frozen model ({engine.fm.name}).\n\nLimits:\n{limits}")
    app.state.engine, app.state.batcher, app.state.settings = engine, batcher, settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # Only loc and msg: pydantic's `input`/`ctx` may hold values JSON cannot carry.
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in err.errors()]
        if any(tuple(e.get("loc", ())) == ("body",) for e in err.errors()):
            parts.append("the body must be a JSON object sent with content-type: application/json")
        return _error(422, ErrorDetail(type="invalid_request", message="; ".join(parts)[:2000]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8): malformed JSON, as 422
            return _error(422, ErrorDetail(type="invalid_request", message=f"malformed body: {err.detail}"))
        return _error(err.status_code, ErrorDetail(type="http_error", message=str(err.detail)))

    async def run(kind: str, items: list) -> list:
        try:
            return await (batcher.classify(items) if kind == "classify" else batcher.generate(items))
        except (QueueTimeout, QueueFull) as err:
            raise ApiError(503, "overloaded", str(err)) from None
        except InputTooLongError as err:
            raise ApiError(422, "limit_exceeded", str(err), limit="context_size") from None
        except EngineError as err:
            raise ApiError(422, "engine_error", str(err)) from None

    def known(task: str) -> None:
        if task not in engine.tasks:  # fast path; the worker checks again against the registry it runs with
            raise ApiError(404, "unknown_task", f"unknown task {task!r}; see GET /v1/tasks")

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(body: ClassifyBody) -> ClassifyResponse:
        """Label each input with the task's label words (rank classification)."""
        if len(body.inputs) > settings.max_inputs:
            raise _limit("max_inputs", len(body.inputs), settings.max_inputs, "inputs in one request")
        known(body.task)
        results = await run("classify", [ClassifyRequest(body.task, text) for text in body.inputs])
        return ClassifyResponse(task=body.task, predictions=[
            Prediction(label=r.label, probabilities=_finite(r.probs), scores=_finite(r.scores)) for r in results])

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate(body: GenerateBody) -> GenerateResponse:
        """Greedy continuation of the input with the task's prompt (stops at EOS or a newline)."""
        limit = body.max_new_tokens if body.max_new_tokens is not None else settings.max_new_tokens
        if limit > settings.max_new_tokens:
            raise _limit("max_new_tokens", limit, settings.max_new_tokens, "max_new_tokens")
        known(body.task)
        [output] = await run("generate", [GenerateRequest(body.task, body.input, limit)])
        return GenerateResponse(task=body.task, output=output)

    def info(name: str, entry: Any) -> TaskInfo:
        meta = entry.prompt.metadata
        return TaskInfo(name=name, prompt_length=entry.prompt.length, hidden_size=entry.prompt.hidden_size,
                        label_words=entry.label_words, metrics=_finite(meta.get("metrics")),
                        init=_finite(meta.get("init")), base_model=_finite(meta.get("base_model")),
                        file=entry.source.name if entry.source is not None else None)

    @app.get("/v1/tasks", response_model=TasksResponse)
    async def tasks() -> TasksResponse:
        """Tasks served, and prompt files skipped with the reason (rescans the directory first)."""
        await reload()
        entries = engine.tasks
        where = f"{engine.prompts_dir}{os.sep}" if engine.prompts_dir is not None else None
        # Reasons name files relative to the prompts directory: clients need not learn server paths.
        skipped = [SkippedFile(file=f, reason=r.replace(where, "") if where else r)
                   for f, r in sorted(engine.skipped.items())]
        skipped += [SkippedFile(file=e.source.name if e.source else n, reason=f"{n!r} is not a valid task name "
                                f"(pattern {TASK_NAME}): rename the file") for n, e in entries.items()
                    if not _valid_name(n)]
        return TasksResponse(model=engine.fm.name, skipped=skipped,
                             tasks=[info(n, e) for n, e in sorted(entries.items()) if _valid_name(n)])

    @app.get("/v1/tasks/{task}", response_model=TaskInfo, responses=ERRORS)
    async def task_info(task: Annotated[str, PathParam(pattern=TASK_NAME)]) -> TaskInfo:
        """One task's details."""
        known(task)
        return info(task, engine.tasks[task])

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Any:
        """200 while the batch worker runs, 503 otherwise."""
        health = Health(status="ok" if batcher.alive else "down", model=engine.fm.name, version=__version__,
                        tasks=len(engine.tasks), queued=batcher.queued, batches=batcher.stats.batches,
                        examples=batcher.stats.examples)
        return health if batcher.alive else JSONResponse(health.model_dump(), status_code=503)

    return app


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(TASK_NAME, name) is not None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str, prompts: str | Path, host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, log_level: str = "info") -> None:
    """Load `model`, register every prompt in `prompts`, serve until interrupted (uvicorn)."""
    import uvicorn

    from softprompt.model.loading import load_model

    settings = settings or ServeSettings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not Path(prompts).is_dir():
        raise EngineError(f"prompts directory not found: {prompts}")
    engine = Engine(load_model(model), prompts, batch_size=settings.max_batch_size)
    for file, reason in engine.skipped.items():
        log.warning("skipped %s: %s", file, reason)
    if not _loopback(host):
        log.warning("listening on %s: reachable from other machines, and there is no authentication", host)
    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level=log_level)
