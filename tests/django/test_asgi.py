"""The ASGI application answers the lifespan Django does not: start-up waits for the engine,
shutdown closes it (impressions sent); a configuration mistake stops it loading."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.django.conftest import VWO_HEAP
from vwo_heap_middleware.django import engine
from vwo_heap_middleware.django.asgi import get_asgi_application
from vwo_heap_middleware.django.settings import PROCESS_ENGINE

Message = MutableMapping[str, Any]


def lifespan(*messages: str) -> list[Message]:
    """Run the application's lifespan with these messages; what it sent back."""
    application = get_asgi_application()
    inbox = [{"type": f"lifespan.{name}"} for name in messages]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    async def run() -> None:
        await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(run())
    return sent


def test_startup_waits_for_the_engine_and_shutdown_closes_it() -> None:
    PROCESS_ENGINE.forget()
    try:
        sent = lifespan("startup", "shutdown")
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        assert engine().closed, "closed: spooled impressions sent"
    finally:
        PROCESS_ENGINE.forget()


def test_a_configuration_mistake_stops_the_application_loading() -> None:
    with override_settings(VWO_HEAP={**VWO_HEAP, "gateway_url": "ftp://x"}):
        PROCESS_ENGINE.forget()
        try:
            with pytest.raises(ImproperlyConfigured, match="gateway_url must be an http"):
                get_asgi_application()
        finally:
            PROCESS_ENGINE.forget()
