"""The checks every request passes before it reaches a route, as one ASGI middleware: the API key, the body size,
the number of requests in flight and the time limit; it also records each request's metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from qwen3_rag.server.config import ServerConfig
from qwen3_rag.server.errors import error_body
from qwen3_rag.server.metrics import Metrics

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "Guard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes that answer without the API key: probes of load balancers and orchestrators, and the web page, which
#: holds no data (it asks for the key and sends it with its API calls).
OPEN_PATHS = ("/health", "/ready", "/")
OPEN_PREFIXES = ("/static/",)
#: Most bytes of an oversized body read (and dropped) so that the client, still sending, gets its 413.
_DRAIN_LIMIT = 64 << 20


class Guard:
    """Refuse what must not reach a route, with a JSON error:

    - 401 without ``Authorization: Bearer KEY`` when the server has a key (constant-time comparison; the key is
      never logged), except on :data:`OPEN_PATHS` and under :data:`OPEN_PREFIXES`;
    - 413 for a body over ``max_body_bytes`` (by its Content-Length, or while it streams);
    - 429 with ``Retry-After`` beyond ``max_in_flight`` API requests at once;
    - 504 when the answer has not begun after ``timeout`` seconds (a streamed answer, once begun, runs to its end).
    """

    def __init__(self, app: ASGIApp, *, config: ServerConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self._key = config.api_key.encode("utf-8") if config.api_key else None
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self._guarded(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or (scope["path"] if scope["path"] in OPEN_PATHS else "-")
            self.metrics.observe_request(label, status[0], time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope)
        if refusal is not None:
            if refusal[0] == 413:
                await _drain(receive)
            await _send_error(send, *refusal)
            return
        api = scope["path"].startswith("/v1/")
        if api and self._in_flight >= self.config.max_in_flight:
            await _send_error(send, 429, f"the server is answering {self._in_flight} requests already; retry "
                                         "shortly", "too_many_requests", {"Retry-After": "1"})
            return
        self._in_flight += api
        try:
            await self._timed(scope, self._counted(receive), send)
        finally:
            self._in_flight -= api

    def _refusal(self, scope: Scope) -> tuple[int, str, str, dict[str, str]] | None:
        headers = dict(scope.get("headers") or [])
        if self._key is not None and not _open(scope["path"]):
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if not given or scheme.lower() != b"bearer":
                return 401, "this server needs an API key: send the header 'Authorization: Bearer KEY'", \
                    "missing_api_key", {"WWW-Authenticate": "Bearer"}
            if not hmac.compare_digest(token.strip(), self._key):
                return 401, "the API key is not valid", "invalid_api_key", {"WWW-Authenticate": "Bearer"}
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            return 413, _too_large(self.config.max_body_bytes), "body_too_large", {}
        return None

    def _counted(self, receive: Receive) -> Receive:
        """``receive`` that refuses a body growing past the limit while it streams (no Content-Length)."""
        limit = self.config.max_body_bytes
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _too_large(limit))
            return message

        return counted

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        begun = False

        async def send_begun(message: Message) -> None:
            nonlocal begun
            begun = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_begun))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.config.timeout or None)
        except asyncio.TimeoutError:
            if begun:
                await task
                return
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await _send_error(send, 504, f"no answer within the server's time limit of {self.config.timeout:g} s; "
                                         "send less per request or retry later", "timeout", {})
        except asyncio.CancelledError:
            task.cancel()
            raise


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _too_large(limit: int) -> str:
    return (f"the request body is larger than the server's limit of {limit} bytes; send fewer or shorter texts per "
            "request (or start the server with a larger --max-body-bytes)")


async def _drain(receive: Receive) -> None:
    read = 0
    while read <= _DRAIN_LIMIT:
        message = await receive()
        read += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _send_error(send: Send, status: int, message: str, code: str, headers: dict[str, str]) -> None:
    data = json.dumps(error_body(status, message, code)).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
