"""Pure ASGI middleware for Starlette and FastAPI: ``request.state.flags``.

::

    app.add_middleware(HeapFlagsMiddleware, engine=engine)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import RequestFacts, build_visitor, resolve_identity_async
from .engine import FlagEngine
from .request_flags import RequestFlags, current_flags, merge_vary

logger = logging.getLogger("vwo_heap_middleware")


def refuse(status: int, redirect_to: str | None) -> Any:
    """Starlette's "no page": a redirect, or an ``HTTPException`` (rendered by Starlette)."""
    if redirect_to is not None:
        return RedirectResponse(redirect_to, status_code=302)
    raise HTTPException(status_code=status)


class HeapFlagsMiddleware:
    """Evaluates ``Config.flags`` once per HTTP request and exposes them as ``request.state.flags``.

    Starts the engine on lifespan start-up (waiting up to ``startup_wait`` seconds for settings)
    and closes it on shutdown; without lifespan events the engine starts on the first request.
    """

    def __init__(self, app: ASGIApp, *, engine: FlagEngine, startup_wait: float = 2.0) -> None:
        if not isinstance(engine, FlagEngine):
            raise TypeError("HeapFlagsMiddleware needs engine=FlagEngine(config)")
        self.app = app
        self.engine = engine
        self.startup_wait = startup_wait
        config = engine.config
        self._identity_header = config.identity_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        flags = RequestFlags(
            self.engine, await self._visitor(scope, request), request=request, refuse=refuse
        )
        await flags.load_async(self.engine.config.flags)
        scope.setdefault("state", {})["flags"] = flags

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                added = flags.response_headers()
                if added:
                    headers = MutableHeaders(scope=message)
                    vary = [value for name, value in added if name == "Vary"]
                    if vary:
                        headers["Vary"] = merge_vary(headers.get("vary"), vary)
                    for name, value in added:
                        if name != "Vary":
                            headers.append(name, value)
            await send(message)

        token = current_flags.set(flags)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current_flags.reset(token)

    async def _visitor(self, scope: Scope, request: Request) -> Any:
        cookie: list[str] = []
        identity: bytes | None = None
        user_agent = forwarded_for = forwarded = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie.append(value.decode("latin-1"))
            elif name == self._identity_header:
                identity = value
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
            elif name == b"forwarded":
                forwarded = value.decode("latin-1")
        client = scope.get("client")
        facts = RequestFacts(
            cookie="; ".join(cookie) or None,
            identity_header=identity,
            user_agent=user_agent,
            peer=client[0] if client else None,
            forwarded_for=forwarded_for,
            forwarded=forwarded,
        )
        resolved = await resolve_identity_async(self.engine.config, request)
        return build_visitor(self.engine.config, facts, request, resolved)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.engine.start()
                await asyncio.to_thread(self.engine.wait_ready, self.startup_wait)
            return message

        return wrapped

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.to_thread(self.engine.close)
            await send(message)

        return wrapped
