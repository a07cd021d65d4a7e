"""The Starlette and FastAPI adapter: a pure ASGI middleware and the template helper.

::

    app.add_middleware(HeapFlagsMiddleware, engine=engine)
    templates = Jinja2Templates(directory="templates", context_processors=[flags_context])
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .engine import FlagEngine
from .guards import FlagRequired
from .guards import requires_flag as requires_flag  # the guard, from each adapter
from .headers import ResponseHeaders
from .request_flags import RequestFlags, open_request_async
from .visitor import RequestFacts


class HeapFlagsMiddleware:
    """Decides ``Config.flags`` once per HTTP request into ``request.state.flags``.

    Starts the engine on lifespan start-up (waiting for the first settings answer, at most
    ``startup_wait`` seconds, default ``Config.startup_wait``) and closes it on shutdown; without
    lifespan events the engine starts on the first request.
    Answers ``FlagRequired`` from ``@requires_flag`` with the app's own handler for that status.
    """

    def __init__(
        self, app: ASGIApp, *, engine: FlagEngine, startup_wait: float | None = None
    ) -> None:
        if not isinstance(engine, FlagEngine):
            raise TypeError("HeapFlagsMiddleware needs engine=FlagEngine(config)")
        self.app = app
        self.engine = engine
        self.startup_wait = startup_wait
        self._identity_header = engine.config.identity_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        facts = RequestFacts.from_asgi(scope, self._identity_header)
        flags = await open_request_async(
            self.engine, facts, make_request=lambda: Request(scope, receive)
        )
        scope.setdefault("state", {})["flags"] = flags
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                added = flags.response_headers()
                if added:
                    message["headers"] = with_headers(message.get("headers") or (), added)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except FlagRequired as refused:
            if started:
                raise
            response = await _refusal(scope, flags.request, refused)
            await response(scope, receive, send_with_headers)
        finally:
            flags.close()

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.engine.start()
                await asyncio.to_thread(self.engine.wait_started, self.startup_wait)
            return message

        return wrapped

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.to_thread(self.engine.close)
            await send(message)

        return wrapped


def with_headers(
    raw: Iterable[tuple[bytes, bytes]], added: ResponseHeaders
) -> list[tuple[bytes, bytes]]:
    """An ASGI response's raw headers with ``added``: ``Vary`` merged into one header,
    ``Cache-Control`` made private, the extra headers appended."""
    raw = list(raw)
    if not any(name.lower() in (b"vary", b"cache-control") for name, _ in raw):
        return raw + list(added.raw)  # the usual response: headers encoded once
    headers: list[tuple[bytes, bytes]] = []
    vary: list[str] = []
    cache_control: list[str] = []
    for name, value in raw:
        lowered = name.lower()
        if lowered == b"vary" and added.vary:
            vary.append(value.decode("latin-1"))
            continue
        if lowered == b"cache-control" and added.cache_control:
            cache_control.append(value.decode("latin-1"))
            continue
        headers.append((name, value))
    appended = added.to_append(vary, ", ".join(cache_control) if cache_control else None)
    if cache_control and not any(name == "Cache-Control" for name, _ in appended):
        headers.append((b"cache-control", ", ".join(cache_control).encode("latin-1")))
    for extra, text in appended:
        headers.append((extra.lower().encode("latin-1"), text.encode("latin-1")))
    return headers


async def _refusal(scope: Scope, request: Request, refused: FlagRequired) -> Response:
    """Starlette's "no page": a redirect, or the app's handler for ``HTTPException(status)``."""
    if refused.redirect_to is not None:
        return RedirectResponse(refused.redirect_to, status_code=302)
    error = HTTPException(status_code=refused.status)
    handlers: dict[Any, Any] = getattr(scope.get("app"), "exception_handlers", None) or {}
    handler = handlers.get(refused.status) or next(
        (handlers[kind] for kind in type(error).__mro__ if kind in handlers), None
    )
    if handler is None:
        return PlainTextResponse(error.detail, status_code=error.status_code)
    response = handler(request, error)
    return await response if inspect.isawaitable(response) else response  # type: ignore[no-any-return]


def flags_context(request: Request) -> dict[str, Any]:
    """A Jinja2Templates context processor: ``{{ flags.variable('key', 'name', 'default') }}``."""
    flags: RequestFlags | None = getattr(request.state, "flags", None)
    return {"flags": flags}
