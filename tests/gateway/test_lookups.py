"""An engine's lookups under bursts of new visitors: a waiter giving up never cancels what
others share (the event loop, the thread pool with Redis, an https gateway)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
from typing import Any

import pytest

from tests.support import SHOP, EngineFactory, TlsFiles, visitor, wait_until
from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.observers import Observer
from vwo_heap_middleware.testing.gateway import LocalGateway, compile_flags

BURST_MEMBERS = [f"member{n}@example.com" for n in range(100)]
BURST = [*BURST_MEMBERS, *(f"visitor{n}@example.com" for n in range(900))]
PREMIUM = ("premium_checkout",)
PROBE = "probe@example.com"  # a member the burst never asked about
ANSWER_TIMEOUT = 10.0  # once the gateway is healthy: time enough on any machine


def burst_gateway(tls: TlsFiles | None = None) -> LocalGateway:
    files = (tls.cert, tls.key) if tls is not None else None
    return LocalGateway(compile_flags(SHOP), {"vip": [*BURST_MEMBERS, PROBE]}, tls=files)


def decide_all_from_threads(
    engine: FlagEngine, identities: list[str], threads: int
) -> list[Reason]:
    """Every identity decided once by blocking callers (the thread pool's lookups), half of
    them from the event loop joining those same lookups; returns every decision's reason."""

    def one(identity: str) -> Reason:
        return engine.decide(visitor(engine.config, identity), PREMIUM)["premium_checkout"].reason

    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        decided = list(pool.map(one, identities))
    joined = asyncio.run(decide_all(engine, identities[::2], connections=threads))
    return decided + joined


async def decide_all(
    engine: FlagEngine,
    identities: list[str],
    connections: int,
    timeout: float | None = None,
    serve_on: bool = False,
) -> list[Reason]:
    """Every identity decided once, ``connections`` at a time, as a server's requests would be
    (each waiting ``timeout`` s at most: the engine's budget if None); ``serve_on``: the loop
    then goes on, as a server's does, until the lookups the requests gave up on have landed."""
    gate = asyncio.Semaphore(connections)

    async def one(identity: str) -> Reason:
        async with gate:
            who = visitor(engine.config, identity)
            decided = await engine.decide_async(who, PREMIUM, timeout=timeout)
            return decided["premium_checkout"].reason

    reasons = list(await asyncio.gather(*(one(identity) for identity in identities)))
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while serve_on and engine.stats()["lookups_in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return reasons


def assert_every_member_decided(engine: FlagEngine) -> None:
    """Asked one at a time once the gateway is healthy: each visitor's own decision."""

    async def each() -> list[tuple[str, Reason]]:
        return [
            (who, reason)
            for who in BURST
            for reason in await decide_all(engine, [who], 1, timeout=ANSWER_TIMEOUT)
        ]

    wrong = [
        (who, reason)
        for who, reason in asyncio.run(each())
        if reason is not (Reason.TARGETED if who in BURST_MEMBERS else Reason.NOT_TARGETED)
    ]
    assert wrong == [], f"{len(wrong)} visitors decided wrongly, e.g. {wrong[:3]}"


@pytest.mark.parametrize("path", ["loop", "redis", "https", "threads"])
def test_a_burst_of_new_visitors_leaves_no_lookup_stuck(
    path: str, request: pytest.FixtureRequest, make_engine: EngineFactory, tls_files: TlsFiles
) -> None:
    """1,000 new identities over 64 connections while lookups take 30 ms: most requests time
    out waiting, and afterwards every member still gets the flag (issue: they got
    ``gateway_error`` until the worker restarted). Async requests ask from the event loop (with
    Redis through its asyncio client, over TLS too); blocking callers use the thread pool."""
    options: dict[str, Any] = {}
    if path == "redis":
        options["redis_url"] = request.getfixturevalue("redis_server").url
    if path == "https":
        options["gateway_ca_file"] = str(tls_files.ca)
    with burst_gateway(tls_files if path == "https" else None) as gateway:
        # Waiters give up long before their lookups land (a 10 ms budget against 30 ms
        # answers); the lookups themselves have time, so what follows never races a timeout.
        engine = make_engine(gateway, evaluation_timeout=0.01, lookup_timeout=10.0, **options)
        gateway.faults.set("check_attribute", latency=0.03)
        if path == "threads":
            reasons = decide_all_from_threads(engine, BURST, threads=64)
            assert len(reasons) == 1500
        else:
            reasons = asyncio.run(decide_all(engine, BURST, connections=64, serve_on=True))
            assert len(reasons) == len(BURST)
            assert engine._lookups._executor is None, "no thread: every lookup on the loop"
        assert Reason.TIMEOUT in reasons, "waiters gave up on lookups others still shared"
        gateway.faults.clear()
        wait_until(lambda: engine.stats()["lookups_in_flight"] == 0, what="every lookup landed")
        probe = visitor(engine.config, PROBE)  # a breaker the burst opened closes on a probe
        wait_until(
            lambda: (
                engine.decide(probe, PREMIUM, timeout=ANSWER_TIMEOUT)["premium_checkout"].enabled
            )
        )
        assert_every_member_decided(engine)
        assert engine.stats()["lookups_in_flight"] == 0


@pytest.mark.parametrize("path", ["loop", "pool"])
def test_requests_joined_on_a_slow_lookup_get_its_answer_after_one_gave_up(
    path: str, shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(shop_gateway, lookup_timeout=2.0)
    member = visitor(engine.config, "vip@example.com")
    shop_gateway.faults.set("check_attribute", latency=0.4)

    async def joined() -> list[dict[str, FlagDecision]]:
        if path == "pool":  # as a thread would: the sync path, joined from the loop
            first = asyncio.to_thread(engine.decide, member, PREMIUM, timeout=0.05)
        else:
            first = engine.decide_async(member, PREMIUM, timeout=0.05)
        impatient = asyncio.ensure_future(first)
        await asyncio.sleep(0.01)  # the lookup is under way: the others join it
        later = [engine.decide_async(member, PREMIUM, timeout=2.0) for _ in range(3)]
        return [await impatient, *await asyncio.gather(*later)]

    results = asyncio.run(joined())
    assert results[0]["premium_checkout"].reason is Reason.TIMEOUT
    assert [r["premium_checkout"].reason for r in results[1:]] == [Reason.TARGETED] * 3
    assert len(shop_gateway.records()["membership_lookups"]) == 1, "one lookup, shared"
    assert engine.stats()["lookups_in_flight"] == 0


def test_a_stalled_event_loop_leaves_no_lookup_task_failing(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """The loop stalls past every waiter's budget while the lookups are under way: the
    waiters time out, the lookups still land, and nothing dies in ``set_result``."""
    engine = make_engine(shop_gateway, lookup_timeout=2.0, evaluation_timeout=0.05)
    people = ["vip@example.com", *(f"p{n}@example.com" for n in range(20))]
    shop_gateway.faults.set("check_attribute", latency=0.1)
    loop_errors: list[dict[str, Any]] = []

    async def stalled() -> list[dict[str, FlagDecision]]:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        requests = [
            asyncio.ensure_future(engine.decide_async(visitor(engine.config, p), PREMIUM))
            for p in people
        ]
        await asyncio.sleep(0.01)  # every lookup started
        time.sleep(0.3)  # the loop is stalled: no waiter wakes before its budget is gone
        decided = await asyncio.gather(*requests)
        while engine.stats()["lookups_in_flight"]:
            await asyncio.sleep(0.01)  # the lookups land afterwards
        return decided

    decided = asyncio.run(stalled())
    assert {d["premium_checkout"].reason for d in decided} <= {
        Reason.TIMEOUT,
        Reason.TARGETED,
        Reason.NOT_TARGETED,
    }
    gc.collect()
    assert loop_errors == []
    again = engine.decide(visitor(engine.config, "vip@example.com"), PREMIUM)
    assert again["premium_checkout"].reason is Reason.TARGETED


class LookupThreads(Observer):
    """Which thread ran each gateway lookup."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def lookup_done(self, kind: str, seconds: float, failed: bool) -> None:
        self.threads.append(threading.current_thread().name)


def test_a_blocking_callers_one_lookup_runs_in_its_own_thread(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """No hand-off to the pool and back for a new visitor's one lookup (issue 31), while a
    call with less time than a whole lookup still waits on the pool, within its budget."""
    engine = make_engine(shop_gateway, lookup_timeout=5.0)  # a whole lookup fits the budget
    seen = LookupThreads()
    engine.add_observer(seen)
    decided = engine.decide(visitor(engine.config, "vip@example.com"), PREMIUM)
    assert decided["premium_checkout"].reason is Reason.TARGETED
    assert seen.threads == [threading.current_thread().name]
    shop_gateway.faults.set("check_attribute", latency=0.5)
    started = time.monotonic()
    late = engine.decide(visitor(engine.config, "other@example.com"), PREMIUM, timeout=0.05)
    assert late["premium_checkout"].reason is Reason.TIMEOUT
    assert time.monotonic() - started < 0.45, "the budget, not the lookup, bounds the call"
    shop_gateway.faults.clear()
    wait_until(lambda: len(seen.threads) == 2, what="the pool's lookup to land")
    assert seen.threads[1].startswith("vwo-heap-lookup")


def test_a_blocking_call_with_its_budget_spent_is_a_timeout_not_an_error(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """Issue (found in review): a blocking caller with no time left was taken for one on the
    event loop, and failed with ``error``."""
    engine = make_engine(shop_gateway)
    decided = engine.decide(visitor(engine.config, "vip@example.com"), PREMIUM, timeout=0.0)
    assert decided["premium_checkout"].reason is Reason.TIMEOUT
