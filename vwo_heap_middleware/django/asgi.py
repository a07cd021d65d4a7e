"""``get_asgi_application()``: Django's ASGI application, answering the ASGI lifespan Django
itself does not speak, so the engine is started before the first request and closed (spooled
impressions sent) at shutdown.

Uvicorn re-raises ``SIGTERM`` once it has shut down gracefully, so ``atexit`` handlers never
run there: under ASGI the lifespan is the one place an exit can send what is spooled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.asgi import get_asgi_application as django_asgi_application

from .settings import engine

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def get_asgi_application() -> ASGIApp:
    """Use it in ``asgi.py`` in place of ``django.core.asgi.get_asgi_application``. A
    configuration mistake raises ``ImproperlyConfigured`` here, naming it: the server does not
    start."""
    django_app = django_asgi_application()

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await django_app(scope, receive, send)

    return application


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.to_thread(engine().wait_started)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(engine().close)
            await send({"type": "lifespan.shutdown.complete"})
            return
