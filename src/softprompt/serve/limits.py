"""Guards in front of the app, before it parses anything: body size (413), body and head read time (408),
content-type (415).

uvicorn reads a request's head itself and has no timeout for it (a client sending one header byte a minute
holds its connection for ever), so the head timeout is a subclass of its h11 protocol (`head_timeout_protocol`,
passed as `uvicorn.Config(http=...)`); the body is read here, in `BodyLimit`, under the same deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from softprompt.serve.schemas import ErrorDetail, error_response

JSON_ROUTES = ("/v1/",)  # POST bodies there are JSON; /docs and the rest take no body


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413, bodies not fully sent within `read_timeout_s`
    with 408, and POSTs to the JSON routes without `content-type: application/json` with 415, all before the
    app parses anything.

    Checks Content-Length up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float = 30.0) -> None:
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["method"] == "POST" and scope["path"].startswith(JSON_ROUTES):
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                await _refuse(scope, send, 415, ErrorDetail(
                    type="unsupported_media_type", message=f"content-type {kind.decode(errors='replace')!r}: send "
                    "the body as JSON with content-type: application/json"))
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send, int(declared))
            return
        chunks, size, more = [], 0, True
        deadline = time.monotonic() + self.read_timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await _refuse(scope, send, 408, ErrorDetail(
                    type="read_timeout", message=f"request body not received within read_timeout_s="
                    f"{self.read_timeout_s:g} s ({size} bytes arrived)", limit="read_timeout_s"))
                return
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, send, size)
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

    async def _too_large(self, scope: Scope, send: Send, size: int) -> None:
        await _refuse(scope, send, 413, ErrorDetail(
            type="limit_exceeded", message=f"request body: {size} bytes > max_body_bytes={self.max_bytes}",
            limit="max_body_bytes", maximum=self.max_bytes, value=size))


async def _refuse(scope: Scope, send: Send, status: int, detail: ErrorDetail) -> None:
    await error_response(status, detail)(scope, _no_receive, send)


def head_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, answering 408 and closing a connection whose request head has not fully
    arrived `seconds` after the connection opened or the head's first byte came (an idle keep-alive
    connection is uvicorn's own `timeout_keep_alive`'s)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json.dumps({"error": {"type": "read_timeout", "message": f"request head not received within "
                                 f"read_timeout_s={seconds:g} s", "limit": "read_timeout_s"}})
    answer = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
              f"content-length: {len(body)}\r\n\r\n{body}").encode()

    class HeadTimeoutH11Protocol(H11Protocol):
        _head_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self._between_requests():
                self._arm()  # the first byte of the next request on a kept-alive connection
            super().data_received(data)
            if not self._between_requests():
                self._disarm()  # the head is complete: the request runs (its body: BodyLimit's deadline)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _timed_out(self) -> None:
            self._head_timer = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return HeadTimeoutH11Protocol


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
