"""The HTTP API: many prompt-tuned tasks on one frozen model, behind FastAPI (`softprompt serve`).

    POST /v1/classify   {"task": "sst2", "inputs": ["a gem .", "dull"]}  -> label + probabilities per input
    POST /v1/generate   {"task": "squad", "input": "...", "max_new_tokens": 16} -> greedy continuation
    GET  /v1/tasks      tasks served (P, label words, metrics) and files skipped with the reason
    GET  /v1/tasks/{task}
    GET  /healthz       200 while the batch worker runs; /docs and /openapi.json describe it all
    POST /v1/completions, GET /v1/models: OpenAI-compatible (completions.py); `model` names the task

Requests are answered through `batcher.Batcher` (mixed-task micro-batches on one worker thread). Errors are
always JSON `{"error": {"type", "message", "limit"?, "maximum"?, "value"?}}`:

    408  head or body not received within read_timeout_s (limits.py; the connection is closed)
    413  body larger than max_body_bytes (checked before the body is parsed)
    415  a POST to /v1/... without content-type: application/json
    405  wrong method for the path (with Allow)
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
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from softprompt import __version__
from softprompt.errors import UsageError
from softprompt.scoring import InputTooLongError
from softprompt.serve.batcher import Batcher, Job, QueueFull, QueueTimeout
from softprompt.serve.completions import completion_routes
from softprompt.serve.compute_thread import on_compute_thread
from softprompt.serve.engine import ClassifyRequest, Engine, EngineError, GenerateRequest
from softprompt.serve.limits import BodyLimit, head_timeout_protocol
from softprompt.serve.schemas import (
    ERRORS,
    TASK_NAME,
    ApiError,
    ClassifyBody,
    ClassifyResponse,
    ErrorDetail,
    GenerateBody,
    GenerateResponse,
    Health,
    Prediction,
    SkippedFile,
    TaskInfo,
    TasksResponse,
    error_response,
    finite,
    limit_error,
    valid_name,
)

log = logging.getLogger("softprompt.serve")


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
    read_timeout_s: float = 30.0
    """A request's head, and then its body, must arrive within this; else 408 (slow clients are not held)."""
    continuous_batching: bool = True
    """Generation joins and leaves a running batch between decode steps (serve/batcher.py); False: static
    micro-batches, each decoded to its longest request."""
    max_running_requests: int = 64
    """Generation requests decoding at once in the continuous batch (vLLM's max_num_seqs); the rest queue."""

    def __post_init__(self) -> None:
        positive = ("max_batch_size", "max_running_requests", "max_input_tokens", "max_inputs", "max_body_bytes", "max_new_tokens",
                    "queue_timeout_s", "max_queued", "read_timeout_s")
        bad = [f"{k}={getattr(self, k)}" for k in positive if not getattr(self, k) > 0]
        bad += [f"{k}={getattr(self, k)}" for k in ("max_wait_ms", "reload_interval_s") if getattr(self, k) < 0]
        if bad:
            raise ServeSettingsError(f"server settings must be positive (waits: >= 0); got {', '.join(bad)}")


class ServeSettingsError(UsageError):
    """A limit or batching setting that cannot work (the message shows the values)."""


# ------------------------------------------------------------------------------------------------- the app


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app for `engine`; the batcher and the reload loop start with the app's lifespan."""
    settings = settings or ServeSettings()
    batcher = Batcher(engine, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                      queue_timeout_s=settings.queue_timeout_s, max_queued=settings.max_queued,
                      check=_job_check(engine, settings), continuous=settings.continuous_batching,
                      max_running=settings.max_running_requests)
    reload = _reloader(engine, batcher)
    limits = "\n".join(f"- `{k}` = {v}" for k, v in asdict(settings).items())
    app = FastAPI(title="softprompt", version=__version__, lifespan=_lifespan(engine, batcher, settings, reload),
                  description=f"Prompt-tuned tasks on one frozen model ({engine.fm.name}).\n\nLimits:\n{limits}")
    app.state.engine, app.state.batcher, app.state.settings = engine, batcher, settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s)
    _error_handlers(app)
    _task_routes(app, engine, batcher, settings, reload)
    completion_routes(app, engine, settings, lambda kind, items: run_jobs(batcher, kind, items))
    app.openapi = _openapi_with_limits(app, settings)  # type: ignore[method-assign]
    return app


def uvicorn_config(app: FastAPI, settings: ServeSettings, **kwargs: Any) -> Any:
    """uvicorn's Config for `app`, with the request-head timeout (limits.head_timeout_protocol)."""
    import uvicorn

    return uvicorn.Config(app, http=head_timeout_protocol(settings.read_timeout_s), **kwargs)


def _openapi_with_limits(app: FastAPI, settings: ServeSettings) -> Callable[[], dict[str, Any]]:
    """The OpenAPI schema with this server's bounds (they are settings, not constants of the body models), so
    schema-driven clients and fuzzers see what the routes enforce."""
    from fastapi.openapi.utils import get_openapi

    bounds = {("ClassifyBody", "inputs"): {"maxItems": settings.max_inputs},
              ("GenerateBody", "max_new_tokens"): {"maximum": settings.max_new_tokens},
              ("CompletionBody", "max_tokens"): {"maximum": settings.max_new_tokens}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            models = schema.get("components", {}).get("schemas", {})
            for (model, field), bound in bounds.items():
                prop = models.get(model, {}).get("properties", {}).get(field)
                if prop is not None:  # optional fields are anyOf [integer, null]: bound the integer branch
                    for branch in prop.get("anyOf", [prop]):
                        if branch.get("type") in ("integer", "array"):
                            branch.update(bound)
            prompt = models.get("CompletionBody", {}).get("properties", {}).get("prompt", {})
            for branch in prompt.get("anyOf", []):
                if branch.get("type") == "array":
                    branch["maxItems"] = settings.max_inputs
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _job_check(engine: Engine, settings: ServeSettings) -> Callable[[Job], None]:
    """The check the batch worker runs right before a job's batch, when the registry is current."""
    tokenizer = engine.fm.tokenizer

    def check(job: Job) -> None:
        tasks = engine.tasks
        for item in job.items:
            entry = tasks.get(item.task)
            if item.task is None:  # the base model (OpenAI routes): no prompt, nothing to look up
                pass
            elif entry is None:
                raise ApiError(404, "unknown_task", f"unknown task {item.task!r}; see GET /v1/tasks")
            if job.kind == "classify" and not entry.label_words:
                raise ApiError(422, "no_label_words", f"task {item.task!r} has no label words in its prompt file")
            n = len(tokenizer(item.text, add_special_tokens=False).input_ids)
            if n > settings.max_input_tokens:
                raise limit_error("max_input_tokens", n, settings.max_input_tokens, "input tokens")

    return check


def _reloader(engine: Engine, batcher: Batcher) -> Callable[[], Awaitable[None]]:
    """A rescan of the prompts directory on the worker thread (between batches) that logs what changed."""

    async def reload() -> None:
        try:
            report = await batcher.call(engine.reload)
        except Exception as err:  # noqa: BLE001 — e.g. the directory was removed: keep serving what is loaded
            log.error("reload failed: %s", err)
            return
        for name in report.loaded:
            if valid_name(name):
                log.info("loaded task %r", name)
            else:
                log.warning("not serving %r: not a valid task name (pattern %s); rename the file", name, TASK_NAME)
        for name in report.removed:
            log.info("removed task %r (file deleted)", name)
        for file, reason in report.skipped.items():
            log.warning("skipped %s: %s", file, reason)

    return reload


def _lifespan(engine: Engine, batcher: Batcher, settings: ServeSettings,
              reload: Callable[[], Awaitable[None]]) -> Callable[[FastAPI], Any]:
    """Start the batch worker and the periodic rescan with the app; stop both when it shuts down."""

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

    return lifespan


def _error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, is answered as the JSON ErrorResponse."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # Only loc and msg: pydantic's `input`/`ctx` may hold values JSON cannot carry.
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in err.errors()]
        if any(tuple(e.get("loc", ())) == ("body",) for e in err.errors()):
            parts.append("the body must be a JSON object sent with content-type: application/json")
        return error_response(422, ErrorDetail(type="invalid_request", message="; ".join(parts)[:2000]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8): malformed JSON, as 422
            return error_response(422, ErrorDetail(type="invalid_request", message=f"malformed body: {err.detail}"))
        response = error_response(err.status_code, ErrorDetail(type="http_error", message=str(err.detail)))
        response.headers.update(err.headers or {})  # e.g. 405's Allow: the methods the path takes
        return response


async def run_jobs(batcher: Batcher, kind: str, items: list) -> list:
    """Queue `items` (one request's examples) and wait for their answers; queue and engine errors as ApiError."""
    try:
        return await (batcher.classify(items) if kind == "classify" else batcher.generate(items))
    except (QueueTimeout, QueueFull) as err:
        raise ApiError(503, "overloaded", str(err)) from None
    except InputTooLongError as err:
        raise ApiError(422, "limit_exceeded", str(err), limit="context_size") from None
    except EngineError as err:
        raise ApiError(422, "engine_error", str(err)) from None


def _task_routes(app: FastAPI, engine: Engine, batcher: Batcher, settings: ServeSettings,
                 reload: Callable[[], Awaitable[None]]) -> None:
    """softprompt's own JSON routes: /v1/classify, /v1/generate, /v1/tasks, /healthz."""

    def known(task: str) -> None:
        if task not in engine.tasks:  # fast path; the worker checks again against the registry it runs with
            raise ApiError(404, "unknown_task", f"unknown task {task!r}; see GET /v1/tasks")

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(body: ClassifyBody) -> ClassifyResponse:
        """Label each input with the task's label words (rank classification)."""
        if len(body.inputs) > settings.max_inputs:
            raise limit_error("max_inputs", len(body.inputs), settings.max_inputs, "inputs in one request")
        known(body.task)
        results = await run_jobs(batcher, "classify", [ClassifyRequest(body.task, text) for text in body.inputs])
        return ClassifyResponse(task=body.task, predictions=[
            Prediction(label=r.label, probabilities=finite(r.probs), scores=finite(r.scores)) for r in results])

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate(body: GenerateBody) -> GenerateResponse:
        """Greedy continuation of the input with the task's prompt (stops at EOS or a newline)."""
        limit = body.max_new_tokens if body.max_new_tokens is not None else settings.max_new_tokens
        if limit > settings.max_new_tokens:
            raise limit_error("max_new_tokens", limit, settings.max_new_tokens, "max_new_tokens")
        known(body.task)
        [output] = await run_jobs(batcher, "generate", [GenerateRequest(body.task, body.input, limit)])
        return GenerateResponse(task=body.task, output=output)

    @app.get("/v1/tasks", response_model=TasksResponse)
    async def tasks() -> TasksResponse:
        """Tasks served, and prompt files skipped with the reason (rescans the directory first)."""
        await reload()
        return _tasks_response(engine)

    @app.get("/v1/tasks/{task}", response_model=TaskInfo, responses=ERRORS)
    async def task_info(task: Annotated[str, PathParam(pattern=TASK_NAME)]) -> TaskInfo:
        """One task's details."""
        known(task)
        return _task_info(task, engine.tasks[task])

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Any:
        """200 while the batch worker runs, 503 otherwise."""
        health = Health(status="ok" if batcher.alive else "down", model=engine.fm.name, version=__version__,
                        tasks=len(engine.tasks), queued=batcher.queued, batches=batcher.stats.batches,
                        examples=batcher.stats.examples)
        return health if batcher.alive else JSONResponse(health.model_dump(), status_code=503)


def _task_info(name: str, entry: Any) -> TaskInfo:
    meta = entry.prompt.metadata
    return TaskInfo(name=name, prompt_length=entry.prompt.length, hidden_size=entry.prompt.hidden_size,
                    label_words=entry.label_words, metrics=finite(meta.get("metrics")),
                    init=finite(meta.get("init")), base_model=finite(meta.get("base_model")),
                    file=entry.source.name if entry.source is not None else None)


def _tasks_response(engine: Engine) -> TasksResponse:
    """GET /v1/tasks: the registry's valid names; files skipped, and names that are not valid, with the reason."""
    entries = engine.tasks
    where = f"{engine.prompts_dir}{os.sep}" if engine.prompts_dir is not None else None
    # Reasons name files relative to the prompts directory: clients need not learn server paths.
    skipped = [SkippedFile(file=f, reason=r.replace(where, "") if where else r)
               for f, r in sorted(engine.skipped.items())]
    skipped += [SkippedFile(file=e.source.name if e.source else n, reason=f"{n!r} is not a valid task name "
                            f"(pattern {TASK_NAME}): rename the file") for n, e in entries.items() if not valid_name(n)]
    return TasksResponse(model=engine.fm.name, skipped=skipped,
                         tasks=[_task_info(n, e) for n, e in sorted(entries.items()) if valid_name(n)])


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
    # Loaded and registered on the thread that will run every batch (compute_thread.py says why).
    engine = on_compute_thread(lambda: Engine(load_model(model), prompts, batch_size=settings.max_batch_size))
    for file, reason in engine.skipped.items():
        log.warning("skipped %s: %s", file, reason)
    if not _loopback(host):
        log.warning("listening on %s: reachable from other machines, and there is no authentication", host)
    uvicorn.Server(uvicorn_config(create_app(engine, settings), settings, host=host, port=port,
                                  log_level=log_level)).run()
