"""OpenAI-compatible routes: POST /v1/completions and GET /v1/models, on the same batcher as the own routes.

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.completions.create(model="sst2", prompt="sentence: a gem . sentiment:", max_tokens=2, temperature=0)

The request's `model` names a task (a prompt file's stem), or the base model (`GET /v1/models` lists both) for
no prompt: vLLM's convention for adapters. Decoding is greedy: `temperature` must be 0 (or left out: OpenAI's
default of 1 would mean sampling, which this server does not do, so an explicit non-zero value is refused
rather than silently ignored), likewise `top_p` 1, `n`/`best_of` 1, no `echo`, `suffix`, penalties or
`logit_bias`. Supported: `prompt` (a string or a list: one choice each), `max_tokens` (default 16, at most the
server's max_new_tokens), `stop` (up to 4 strings; the text ends before the first), `logprobs` (0-5: the
chosen token's log-probability and the top alternatives per position), `stream` (server-sent events, one per
token, then `data: [DONE]`), and vLLM's `ignore_eos` (decode to `max_tokens` past EOS). Errors are the server's JSON errors (`error.message`, `error.type`), 4xx.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from softprompt.serve.engine import Engine, GenerateRequest
from softprompt.serve.schemas import ERRORS, ApiError, ErrorDetail, limit_error

MAX_STOPS = 4  # OpenAI's limit


class CompletionBody(BaseModel):
    """OpenAI's legacy Completions request; the fields softprompt cannot honour are refused by name."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A task (prompt file stem) or the base model's name; see GET /v1/models.")
    prompt: str | list[str] = Field(description="Input text, or a list of them (one choice each).")
    max_tokens: int | None = Field(default=16, ge=1, description="New tokens at most (default 16).")
    temperature: float | None = Field(default=None, description="0: greedy (the only decoding offered).")
    top_p: float | None = None
    n: int | None = None
    best_of: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = Field(default=None, description="Up to 4 strings; the text ends before one.")
    logprobs: int | None = Field(default=None, ge=0, le=5, description="Top alternatives per token (0-5).")
    echo: bool | None = False
    suffix: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(default=None, description="Accepted; greedy decoding is deterministic anyway.")
    ignore_eos: bool | None = Field(default=False, description="vLLM's extension: decode past EOS to max_tokens "
                                    "(fixed-length outputs, e.g. for benchmarks).")
    user: str | None = None


def _refuse_unsupported(body: CompletionBody) -> None:
    """A 422 naming the first parameter whose value asks for something other than greedy decoding."""
    wrong = {
        "temperature": body.temperature not in (None, 0), "top_p": body.top_p not in (None, 1),
        "n": body.n not in (None, 1), "best_of": body.best_of not in (None, 1), "echo": bool(body.echo),
        "suffix": body.suffix is not None, "presence_penalty": body.presence_penalty not in (None, 0),
        "frequency_penalty": body.frequency_penalty not in (None, 0), "logit_bias": bool(body.logit_bias),
    }
    for name, bad in wrong.items():
        if bad:
            raise ApiError(422, "unsupported_parameter", f"{name}={getattr(body, name)!r} is not supported: softprompt "
                           "decodes greedily (temperature 0, top_p 1, n 1, no echo/suffix/penalties/logit_bias)")


class TextWatcher:
    """One choice's decoding: text so far, stop strings, logprobs, and the stream of text deltas (scoring.Watcher).

    Runs on the batch worker's thread. Text is decoded from all tokens so far (a token may end mid-character);
    a delta is held back while it ends in U+FFFD (an unfinished UTF-8 sequence) or could be the start of a
    stop string, so a streamed text never shows what the final text does not.
    """

    def __init__(self, engine: Engine, stops: list[str], top_k: int | None,
                 emit: Callable[[str, dict[str, Any] | None], None] | None = None, ignore_eos: bool = False) -> None:
        self.tokenizer, self.eos = engine.fm.tokenizer, None if ignore_eos else engine.fm.tokenizer.eos_token_id
        self.stops, self.top_k, self.want_logprobs, self.emit = stops, top_k or 0, top_k is not None, emit
        self.tokens: list[int] = []
        self.token_logprobs: list[float] = []
        self.top_logprobs: list[dict[str, float]] = []
        self.text, self.sent, self.finish = "", 0, "length"

    def __call__(self, token: int, logprob: float, top: list[tuple[int, float]]) -> bool:
        if token == self.eos:
            self.finish = "stop"
            self._flush(final=True)
            return True
        self.tokens.append(token)
        self.token_logprobs.append(logprob)
        alternatives: dict[str, float] = {}
        for t, lp in top:  # most likely first; tokens that decode alike (byte pieces) keep the likelier one
            alternatives.setdefault(self.tokenizer.decode([t]), lp)
        self.top_logprobs.append(alternatives)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        hits = [text.find(s) for s in self.stops if s in text]
        if hits:
            self.text, self.finish = text[: min(hits)], "stop"
            self._flush(final=True)
            return True
        self.text = text
        self._flush(final=False)
        return False

    def _flush(self, final: bool) -> None:
        """Send the text not sent yet, but the part that may still change unless this is the end."""
        if self.emit is None:
            return
        end = len(self.text)
        if not final:
            while end > self.sent and self.text[end - 1] == "\ufffd":
                end -= 1
            for stop in self.stops:  # hold back a tail that may be the start of a stop string
                for k in range(min(len(stop) - 1, end - self.sent), 0, -1):
                    if self.text[end - k:end] == stop[:k]:
                        end -= k
                        break
        if end > self.sent:
            self.emit(self.text[self.sent:end], self.logprobs_payload(self.sent, end) if self.want_logprobs else None)
            self.sent = end

    def logprobs_payload(self, start: int = 0, end: int | None = None) -> dict[str, Any]:
        """OpenAI's completion logprobs for the tokens whose text starts in [start, end) of the final text."""
        end = len(self.text) if end is None else end
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        offset = 0
        for i in range(len(self.tokens)):
            piece = self.tokenizer.decode(self.tokens[: i + 1], skip_special_tokens=True)[offset:]
            if start <= offset < end or (offset == end == start and piece):
                out["tokens"].append(piece)
                out["token_logprobs"].append(self.token_logprobs[i])
                out["top_logprobs"].append(self.top_logprobs[i] if self.top_k else None)
                out["text_offset"].append(offset)
            offset += len(piece)
        return out


def _stops(body: CompletionBody) -> list[str]:
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise ApiError(422, "invalid_request", f"stop: at most {MAX_STOPS} non-empty strings, got {stops!r}")
    return stops


def completion_routes(app: FastAPI, engine: Engine, settings: Any,
                      run: Callable[[str, list], Awaitable[list]]) -> None:
    """Add /v1/completions and /v1/models to `app`; `run(kind, items)` queues work on the server's batcher."""

    def task_of(model: str) -> str | None:
        if model == engine.fm.name:
            return None  # the base model: no prompt
        if model not in engine.tasks:
            raise ApiError(404, "model_not_found", f"unknown model {model!r}: use a task or {engine.fm.name!r} "
                           "(see GET /v1/models)")
        return model

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The base model and every task, as OpenAI model objects (`root`: the base model)."""
        created = int(time.time())
        rows = [{"id": engine.fm.name, "object": "model", "created": created, "owned_by": "softprompt",
                 "root": engine.fm.name, "parent": None}]
        rows += [{"id": name, "object": "model", "created": created, "owned_by": "softprompt", "root": engine.fm.name,
                  "parent": engine.fm.name} for name in sorted(engine.tasks)]
        return {"object": "list", "data": rows}

    @app.post("/v1/completions", responses=ERRORS)
    async def completions(body: CompletionBody) -> Any:
        """Greedy completions of one prompt or a list of them (OpenAI's Completions API; `stream` for SSE)."""
        _refuse_unsupported(body)
        task, stops = task_of(body.model), _stops(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(422, "invalid_request", "prompt: give a string or a non-empty list of strings")
        if len(prompts) > settings.max_inputs:
            raise limit_error("max_inputs", len(prompts), settings.max_inputs, "prompts in one request")
        limit = body.max_tokens or 16
        if limit > settings.max_new_tokens:
            raise limit_error("max_new_tokens", limit, settings.max_new_tokens, "max_tokens")
        head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": body.model}
        if body.stream:
            return StreamingResponse(_stream(engine, run, head, task, prompts, limit, stops, body.logprobs,
                                             bool(body.ignore_eos)),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        watchers = [TextWatcher(engine, stops, body.logprobs, ignore_eos=bool(body.ignore_eos)) for _ in prompts]
        await run("generate", _requests(task, prompts, limit, watchers, bool(body.ignore_eos)))
        choices = [{"text": w.text, "index": i, "finish_reason": w.finish,
                    "logprobs": w.logprobs_payload() if body.logprobs is not None else None}
                   for i, w in enumerate(watchers)]
        used = sum(engine.input_tokens(p) for p in prompts), sum(len(w.tokens) for w in watchers)
        return head | {"choices": choices, "usage": {"prompt_tokens": used[0], "completion_tokens": used[1],
                                                     "total_tokens": sum(used)}}


def _requests(task: str | None, prompts: list[str], limit: int, watchers: list[TextWatcher],
              ignore_eos: bool) -> list[GenerateRequest]:
    """One engine request per prompt: no newline stop (OpenAI's `stop` does that), EOS as the body says."""
    return [GenerateRequest(task, p, limit, False, w, stop_at_eos=not ignore_eos)
            for p, w in zip(prompts, watchers, strict=True)]


async def _stream(engine: Engine, run: Callable[[str, list], Awaitable[list]], head: dict[str, Any],
                  task: str | None, prompts: list[str], limit: int, stops: list[str],
                  logprobs: int | None, ignore_eos: bool) -> AsyncIterator[str]:
    """Server-sent events: one chunk per text delta as the worker decodes, a last chunk per choice with its
    finish_reason, then `[DONE]`. An error after the first byte arrives as an `error` event."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    def emitter(index: int) -> Callable[[str, dict[str, Any] | None], None]:
        return lambda text, lp: loop.call_soon_threadsafe(queue.put_nowait, (index, text, lp))

    watchers = [TextWatcher(engine, stops, logprobs, emitter(i), ignore_eos) for i in range(len(prompts))]
    job = asyncio.ensure_future(run("generate", _requests(task, prompts, limit, watchers, ignore_eos)))
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    try:
        while (item := await queue.get()) is not None:
            index, text, lp = item
            yield event(head | {"choices": [{"text": text, "index": index, "logprobs": lp, "finish_reason": None}]})
        if job.exception() is not None:
            err = job.exception()
            detail = err.detail if isinstance(err, ApiError) else ErrorDetail(type="server_error", message=str(err))
            yield event({"error": detail.model_dump(exclude_none=True)})
        else:
            for i, w in enumerate(watchers):  # what was held back (an unfinished character at the token limit)
                rest = w.text[w.sent:]
                lp = w.logprobs_payload(w.sent) if rest and logprobs is not None else None
                yield event(head | {"choices": [{"text": rest, "index": i, "logprobs": lp, "finish_reason": w.finish}]})
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # the client went away: a job not started yet leaves the queue
