"""Cached gateway lookups on their own: the circuit breaker, single flight, TTLs, stale answers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import SHOP, EngineFactory, TlsFiles, visitor, wait_until
from vwo_heap_middleware.circuit_breaker import BREAKER_CLOSED, BREAKER_OPENED, CircuitBreaker
from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.gateway_client import GatewayError
from vwo_heap_middleware.lookups import (
    Answer,
    AnswerStatus,
    CachedLookup,
)
from vwo_heap_middleware.testing.gateway import LocalGateway, compile_flags


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def make_lookup(
    fetch: Callable[[str], bool],
    pool: concurrent.futures.Executor,
    clock: Clock,
    breaker: CircuitBreaker | None = None,
) -> CachedLookup[str, bool]:
    return CachedLookup(
        fetch,
        executor=lambda: pool,
        breaker=breaker or CircuitBreaker(clock=clock),
        ttl=lambda member: 300.0 if member else 60.0,
        stale_ttl=3600.0,
        maxsize=100,
        clock=clock,
    )


def answer(lookup: CachedLookup[str, bool], key: str) -> Answer[bool]:
    started = lookup.begin([key])
    concurrent.futures.wait(started.pending.values(), timeout=5)
    return started.finish()[key]


def test_breaker_changes_are_logged(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker(min_calls=2, clock=clock)
    with caplog.at_level("INFO", logger="vwo_heap_middleware"):
        breaker.failure()
        breaker.failure()
        breaker.failure()  # still open: no second line
        clock.now += 1
        assert breaker.allow()
        breaker.success()
    assert [r.getMessage() for r in caplog.records] == [BREAKER_OPENED % (2, 2), BREAKER_CLOSED]
    assert [getattr(r, "circuit", None) for r in caplog.records] == ["open", "closed"]


def test_a_few_failures_among_many_calls_do_not_open_it(clock: Clock) -> None:
    """Slow calls on a busy machine: 1 in 5 failing is not an outage."""
    breaker = CircuitBreaker(min_calls=10, ratio=0.5, clock=clock)
    for n in range(100):
        clock.now += 0.05
        if n % 5 == 0:
            breaker.failure()
        else:
            breaker.success()
    assert not breaker.is_open and breaker.opened == 0


def test_a_failing_gateway_opens_it_and_a_probe_closes_it_soon(clock: Clock) -> None:
    breaker = CircuitBreaker(min_calls=10, ratio=0.5, probe_interval=0.5, clock=clock)
    for _ in range(10):
        assert breaker.allow()
        breaker.failure()
    assert breaker.is_open and breaker.opened == 1
    assert not breaker.allow(), "open: nobody waits on a failing gateway"
    clock.now += 0.5
    assert breaker.allow(), "a probe"
    assert not breaker.allow(), "one probe at a time"
    breaker.failure()  # the fault is still there
    clock.now += 0.5
    assert breaker.allow()
    breaker.success()  # it cleared: closed within one probe interval
    assert not breaker.is_open and breaker.allow()


def test_old_calls_leave_the_window(clock: Clock) -> None:
    breaker = CircuitBreaker(window=10, min_calls=4, ratio=0.5, clock=clock)
    for _ in range(3):
        breaker.failure()
    clock.now += 11  # those three are history
    breaker.failure()
    assert not breaker.is_open, "one failure in the window, below min_calls"


def test_one_key_many_threads_one_gateway_call(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    release = threading.Event()
    calls: list[str] = []

    def fetch(key: str) -> bool:
        calls.append(key)
        release.wait(5)
        return True

    lookup = make_lookup(fetch, pool, clock)
    start, begun = threading.Barrier(16), threading.Barrier(17)
    answers: list[Answer[bool]] = []

    def request() -> None:
        start.wait()
        started = lookup.begin(["ada"])
        assert "ada" in started.pending, "joined the call in flight"
        begun.wait()
        concurrent.futures.wait(started.pending.values(), timeout=5)
        answers.append(started.finish()["ada"])

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    begun.wait(5)  # every request has begun while the one call is still running
    release.set()
    for thread in threads:
        thread.join()
    assert calls == ["ada"]
    assert answers == [Answer(True, AnswerStatus.FRESH, 1300.0)] * 16, "expires with its TTL"
    assert lookup.calls == 1


def test_members_and_non_members_have_their_own_ttl(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    members = {"ada"}
    lookup = make_lookup(lambda key: key in members, pool, clock)
    assert answer(lookup, "ada").value is True
    assert answer(lookup, "bob").value is False
    assert lookup.calls == 2
    clock.now += 61  # past the non-member TTL, within the member TTL
    assert lookup.begin(["ada"]).answers["ada"] == Answer(True, AnswerStatus.FRESH, 1300.0)
    assert lookup.begin(["bob"]).answers == {}, "bob is asked again"


def test_a_failing_gateway_serves_stale_answers_then_nothing(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    failing = [False]

    def fetch(key: str) -> bool:
        if failing[0]:
            raise ConnectionError("gateway down")
        return True

    lookup = make_lookup(fetch, pool, clock)
    assert answer(lookup, "ada") == Answer(True, AnswerStatus.FRESH, 1300.0)
    failing[0] = True
    clock.now += 301  # the fresh answer expired
    assert answer(lookup, "ada") == Answer(True, AnswerStatus.STALE)
    assert answer(lookup, "bob") == Answer(None, AnswerStatus.FAILED)
    clock.now += 3600  # past the stale TTL too
    assert answer(lookup, "ada") == Answer(None, AnswerStatus.FAILED)


def test_an_open_breaker_answers_without_calling(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    breaker = CircuitBreaker(min_calls=1, clock=clock)
    breaker.failure()
    lookup = make_lookup(lambda key: True, pool, clock, breaker)
    started = lookup.begin(["ada"])
    assert started.pending == {}
    assert started.answers["ada"] == Answer(None, AnswerStatus.FAILED)
    assert lookup.calls == 0


def test_a_call_still_running_is_a_timeout(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    release = threading.Event()
    lookup = make_lookup(lambda key: release.wait(5), pool, clock)
    started = lookup.begin(["slow"])
    try:
        assert started.finish()["slow"] == Answer(None, AnswerStatus.TIMEOUT)
    finally:
        release.set()


def test_a_closed_executor_fails_the_lookup(clock: Clock) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    executor.shutdown()
    lookup = make_lookup(lambda key: True, executor, clock)
    started = lookup.begin(["ada"])
    assert started.finish()["ada"] == Answer(None, AnswerStatus.FAILED)


def test_reset_forgets_every_answer(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    lookup = make_lookup(lambda key: True, pool, clock)
    answer(lookup, "ada")
    lookup.reset()
    assert lookup.fallback("ada", AnswerStatus.FAILED) == Answer(None, AnswerStatus.FAILED)
    assert lookup.begin(["ada"]).answers == {}


def test_a_refused_value_does_not_count_against_the_gateway(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    """A 4xx about one identity says nothing about the gateway's health."""
    breaker = CircuitBreaker(min_calls=2, clock=clock)

    def fetch(key: str) -> bool:
        raise GatewayError("/check-attribute: HTTP 400", gateway_fault=False)

    lookup = make_lookup(fetch, pool, clock, breaker)
    for n in range(5):
        assert answer(lookup, f"odd-{n}") == Answer(None, AnswerStatus.FAILED)
    assert not breaker.is_open


# Bursts through a real engine: a waiter giving up never cancels what others share ---------

BURST_MEMBERS = [f"member{n}@example.com" for n in range(100)]
BURST = [*BURST_MEMBERS, *(f"visitor{n}@example.com" for n in range(900))]
PREMIUM = ("premium_checkout",)


def burst_gateway(tls: TlsFiles | None = None) -> LocalGateway:
    files = (tls.cert, tls.key) if tls is not None else None
    return LocalGateway(compile_flags(SHOP), {"vip": BURST_MEMBERS}, tls=files)


async def decide_all(engine: FlagEngine, identities: list[str], connections: int) -> list[Reason]:
    """Every identity decided once, ``connections`` at a time, as a server's requests would be."""
    gate = asyncio.Semaphore(connections)

    async def one(identity: str) -> Reason:
        async with gate:
            decided = await engine.decide_async(visitor(engine.config, identity), PREMIUM)
            return decided["premium_checkout"].reason

    return list(await asyncio.gather(*(one(identity) for identity in identities)))


def assert_every_member_decided(engine: FlagEngine) -> None:
    """Asked one at a time once the gateway is healthy: each visitor's own decision."""

    async def each() -> list[tuple[str, Reason]]:
        return [(who, reason) for who in BURST for reason in await decide_all(engine, [who], 1)]

    wrong = [
        (who, reason)
        for who, reason in asyncio.run(each())
        if reason is not (Reason.TARGETED if who in BURST_MEMBERS else Reason.NOT_TARGETED)
    ]
    assert wrong == [], f"{len(wrong)} visitors decided wrongly, e.g. {wrong[:3]}"


@pytest.mark.parametrize("path", ["loop", "redis", "https"])
def test_a_burst_of_new_visitors_leaves_no_lookup_stuck(
    path: str, request: pytest.FixtureRequest, make_engine: EngineFactory, tls_files: TlsFiles
) -> None:
    """1,000 new identities over 64 connections while lookups take 30 ms: most requests time
    out waiting, and afterwards every member still gets the flag (issue: they got
    ``gateway_error`` until the worker restarted)."""
    options: dict[str, Any] = {}
    if path == "redis":
        options["redis_url"] = request.getfixturevalue("redis_server").url
    if path == "https":
        options["gateway_ca_file"] = str(tls_files.ca)
    with burst_gateway(tls_files if path == "https" else None) as gateway:
        engine = make_engine(gateway, **options)
        gateway.faults.set("check_attribute", latency=0.03)
        reasons = asyncio.run(decide_all(engine, BURST, connections=64))
        assert len(reasons) == len(BURST)
        gateway.faults.clear()
        wait_until(lambda: engine.stats()["lookups_in_flight"] == 0, what="every lookup landed")
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
