"""Membership lookups on the event loop itself, against the local gateway over HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.gateway.client import GatewayError
from vwo_heap_middleware.gateway.loop import LoopMemberships
from vwo_heap_middleware.testing.gateway import LocalGateway

WHO = ("ada@example.com", "ADA@example.com")


def loop_client(url: str, **kwargs: object) -> LoopMemberships:
    config = Config(account_id="123456", sdk_key="local-demo-sdk-key", gateway_url=url, **kwargs)  # type: ignore[arg-type]
    return LoopMemberships(config)


def test_loop_memberships_keep_one_connection_alive(demo_gateway: LocalGateway) -> None:
    client = loop_client(demo_gateway.url)

    async def ask() -> list[bool]:
        return [await client.is_member("heap_premium_users", who) for who in WHO * 10]

    assert asyncio.run(ask()) == [True, False] * 10
    assert len(client._idle) == 1, "one connection, reused for every lookup"
    first = client._idle[0][0]
    assert asyncio.run(ask()) == [True, False] * 10, "and from another event loop"
    assert client._idle[0][0] is first
    lookups = demo_gateway.records()["membership_lookups"]
    assert [(r["attribute"], r["member"]) for r in lookups[:2]] == [(WHO[0], True), (WHO[1], False)]
    client.close()
    assert client._idle == [] and first.fileno() == -1


def test_loop_memberships_survive_a_gateway_restart(demo_gateway: LocalGateway) -> None:
    client = loop_client(demo_gateway.url)
    assert asyncio.run(client.is_member("heap_premium_users", "ada@example.com"))
    demo_gateway.refuse_connections()  # closes the idle connection from the gateway's side
    with pytest.raises(GatewayError):
        asyncio.run(client.is_member("heap_premium_users", "ada@example.com"))
    demo_gateway.accept_connections()
    assert asyncio.run(client.is_member("heap_premium_users", "ada@example.com"))
    client.close()


def test_loop_memberships_give_up_within_the_timeout(demo_gateway: LocalGateway) -> None:
    client = loop_client(demo_gateway.url, lookup_timeout=0.2)
    demo_gateway.faults.set("check_attribute", latency=5.0)
    started = time.monotonic()
    with pytest.raises(GatewayError, match="TimeoutError"):
        asyncio.run(client.is_member("heap_premium_users", "ada@example.com"))
    assert time.monotonic() - started < 1.0
    assert client._idle == [], "a connection with an unread answer is not reused"
    demo_gateway.faults.clear()
    with pytest.raises(GatewayError, match="HTTP 400"):
        demo_gateway.faults.set("check_attribute", status=400)
        asyncio.run(client.is_member("heap_premium_users", "ada@example.com"))
    client.close()


def test_loop_memberships_are_for_plain_http_gateways() -> None:
    assert loop_client("http://gateway.internal:8000").usable
    assert not loop_client("https://gateway.example.com").usable
