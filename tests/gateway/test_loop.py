"""Lookups on the event loop itself (asyncio transports, httptools or h11), against the local
gateway over HTTP and HTTPS: kept alive, closed with their loop, never waiting past the timeout."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, TlsFiles
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.gateway.client import GatewayError
from vwo_heap_middleware.gateway.loop import LoopGateway
from vwo_heap_middleware.testing.gateway import LocalGateway

WHO = ("ada@example.com", "ADA@example.com")


@pytest.fixture(params=["httptools", "h11"])
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["http", "https"])
def gateway(request: pytest.FixtureRequest, tls_files: TlsFiles) -> Iterator[LocalGateway]:
    tls = (tls_files.cert, tls_files.key) if request.param == "https" else None
    with LocalGateway.from_files(
        flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS, tls=tls
    ) as gateway:
        yield gateway


def loop_client(gateway: LocalGateway, tls: TlsFiles, parser: str, **kwargs: Any) -> LoopGateway:
    ca = str(tls.ca) if gateway.tls else None
    config = Config(
        account_id="123456",
        sdk_key="local-demo-sdk-key",
        gateway_url=gateway.url,
        gateway_ca_file=ca,
        **kwargs,
    )
    return LoopGateway(config, parser=parser)


def test_one_connection_per_loop_kept_alive(
    gateway: LocalGateway, tls_files: TlsFiles, parser: str
) -> None:
    client = loop_client(gateway, tls_files, parser)

    async def ask() -> tuple[list[bool], int]:
        answers = [await client.is_member("heap_premium_users", who) for who in WHO * 10]
        return answers, client.idle()

    answers, idle = asyncio.run(ask())
    assert answers == [True, False] * 10
    assert idle == 1, "one connection, reused for every lookup"
    assert client.idle() == 0, "closed with its loop"
    assert asyncio.run(ask()) == ([True, False] * 10, 1), "another loop has its own"
    lookups = gateway.records()["membership_lookups"]
    assert [(r["attribute"], r["member"]) for r in lookups[:2]] == [(WHO[0], True), (WHO[1], False)]


def test_user_details_too(gateway: LocalGateway, tls_files: TlsFiles, parser: str) -> None:
    client = loop_client(gateway, tls_files, parser)
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Safari/604.1"
    details = asyncio.run(_awaited(lambda: client.user_details(ua, "198.51.100.7")))
    assert details["location"]["city"] == "Berlin"
    assert details["userAgent"]["os"] == "iOS"


async def _awaited(start: Any) -> Any:
    return await start()


def test_a_gateway_restart_costs_nothing(
    gateway: LocalGateway, tls_files: TlsFiles, parser: str
) -> None:
    """The loop sees the gateway close its idle connection; the next lookup opens a new one."""
    client = loop_client(gateway, tls_files, parser)

    async def restart() -> list[Any]:
        first = await client.is_member("heap_premium_users", "ada@example.com")
        gateway.refuse_connections()  # closes the idle connection from the gateway's side
        await asyncio.sleep(0.05)
        idle_after_close = client.idle()
        down = await asyncio.gather(
            client.is_member("heap_premium_users", "ada@example.com"), return_exceptions=True
        )
        gateway.accept_connections()
        again = await client.is_member("heap_premium_users", "ada@example.com")
        return [first, idle_after_close, type(down[0]), again]

    assert asyncio.run(restart()) == [True, 0, GatewayError, True]


def test_it_gives_up_within_the_timeout_and_drops_the_connection(
    gateway: LocalGateway, tls_files: TlsFiles, parser: str
) -> None:
    client = loop_client(gateway, tls_files, parser, lookup_timeout=0.2)

    async def slow() -> tuple[float, int]:
        await client.is_member("heap_premium_users", "warm@example.com")  # a connection idles
        gateway.faults.set("check_attribute", latency=5.0)
        started = time.monotonic()
        with pytest.raises(GatewayError, match="TimeoutError"):
            await client.is_member("heap_premium_users", "ada@example.com")
        return time.monotonic() - started, client.idle()

    took, idle = asyncio.run(slow())
    assert took < 1.0
    assert idle == 0, "a connection with an answer still to come is not reused"
    gateway.faults.set("check_attribute", status=400)
    with pytest.raises(GatewayError, match="HTTP 400") as refused:
        asyncio.run(_awaited(lambda: client.is_member("heap_premium_users", "x")))
    assert refused.value.gateway_fault is False
    gateway.faults.clear()


def test_nobody_waits_on_a_refusing_gateway(tls_files: TlsFiles, parser: str) -> None:
    with LocalGateway.from_files(flags_file=DEMO_FLAGS) as gateway:
        client = loop_client(gateway, tls_files, parser)
        gateway.refuse_connections()
        with pytest.raises(GatewayError, match="ConnectionRefusedError"):
            asyncio.run(_awaited(lambda: client.is_member("heap_premium_users", "x")))


def test_close_from_another_thread_and_nothing_left_open(
    gateway: LocalGateway, tls_files: TlsFiles
) -> None:
    """Closing the engine closes connections on their own loop; none is left for the garbage
    collector to find unclosed (the suite turns a ResourceWarning into an error)."""
    client = loop_client(gateway, tls_files, "httptools", lookup_timeout=2.0)

    async def serve_then_close() -> int:
        await asyncio.gather(
            *(client.is_member("heap_premium_users", f"p{n}@example.com") for n in range(8))
        )
        open_before = client.idle()
        await asyncio.to_thread(client.close)
        await asyncio.sleep(0.05)
        return open_before

    assert asyncio.run(serve_then_close()) >= 1
    gc.collect()
