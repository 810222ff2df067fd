"""ASGI middleware that guards the app before it parses anything: the request body size limit (413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from softprompt.serve.schemas import ErrorDetail, error_response


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
        await error_response(413, detail)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
