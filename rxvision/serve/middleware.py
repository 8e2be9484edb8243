"""Pure ASGI middleware: request body limit and request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so the body is never buffered by the middleware
itself and the limit holds while the body streams in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import raw_error
from .metrics import ServeMetrics


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, checked twice.

    First against ``Content-Length`` (nothing is read), then while the body streams in, for
    chunked uploads and clients that understate the length: once the count passes the limit
    the client gets 413 and the app sees a disconnect, so it stops parsing.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "invalid Content-Length header")
                return
            if int(length) > self.max_bytes:
                await _send_error(send, 413, self._too_large(int(length)))
                return
        seen, refused, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    if not started:
                        await _send_error(send, 413, self._too_large(None))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's late answer to a request already refused with 413
            started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _too_large(self, length: int | None) -> str:
        got = f"{length:,} bytes" if length is not None else "the body"
        return f"request body too large: {got} exceeds the limit of {self.max_bytes:,} bytes"


class MetricsMiddleware:
    """Count every HTTP answer by endpoint, method and status, and time it."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics,
                 endpoints: Callable[[], Collection[str]]):
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    def _endpoint(self, path: str) -> str:
        if path.startswith("/static/"):
            return "/static"
        return path if path in self.endpoints() else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def record_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_send)
        finally:
            self.metrics.observe_request(self._endpoint(scope["path"]), scope["method"],
                                         status, time.perf_counter() - start)


async def _send_error(send: Send, status: int, detail: str) -> None:
    start, body = raw_error(status, detail)
    await send(start)
    await send({"type": "http.response.body", "body": body})
