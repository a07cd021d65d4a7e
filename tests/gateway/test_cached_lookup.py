"""Cached gateway lookups on their own: single flight, TTLs, stale answers, the breaker's use."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Hashable
from typing import Any

from tests.support import Clock, wait_until
from vwo_heap_middleware.evaluation.outcome import Answer, AnswerStatus
from vwo_heap_middleware.gateway.breaker import CircuitBreaker
from vwo_heap_middleware.gateway.cached_lookup import CachedLookup
from vwo_heap_middleware.gateway.client import GatewayError


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


def test_a_flight_landing_between_a_miss_and_the_flight_check_is_not_asked_again(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    """The race behind 5 calls for 4 keys: a request misses the cache, the flight for its key
    stores its answer and leaves, and the request then finds no flight. It must take the
    answer the flight stored, not start a second gateway call."""
    release = threading.Event()
    lookup = make_lookup(lambda key: release.wait(5), pool, clock)
    first = lookup.begin(["ada"])  # the flight, blocked in the gateway
    fresh, missed = lookup._fresh, list[object]()
    real_get = fresh.get

    def get_then_land(key: Hashable, now: float) -> tuple[bool, float] | None:
        found = real_get(key, now)
        if not missed:  # this request's miss: the flight lands right after it
            missed.append(key)
            release.set()
            concurrent.futures.wait(first.pending.values(), timeout=5)
            wait_until(lambda: lookup.in_flight() == 0, what="the flight left")
        return found

    fresh.get = get_then_land  # type: ignore[method-assign]
    second = lookup.begin(["ada"])
    assert missed, "the second request missed the cache before the flight landed"
    assert second.pending == {}, "no second flight"
    assert second.finish()["ada"] == Answer(True, AnswerStatus.FRESH, 1300.0)
    assert lookup.calls == 1


def test_a_probe_that_makes_no_call_goes_back_to_the_breaker(
    pool: concurrent.futures.ThreadPoolExecutor, clock: Clock
) -> None:
    """Issue (the https burst test, 1 run in 12): the breaker let a probe through to a flight
    on an event loop that ended before it landed (cancelled: neither success nor failure), so
    it waited for that probe for ever and stayed open; a probe that joined a flight another
    thread had just begun was lost the same way."""
    breaker = CircuitBreaker(clock=clock)
    for _ in range(breaker.min_calls):
        breaker.failure()
    assert breaker.is_open
    lookup = make_lookup(lambda key: True, pool, clock, breaker)

    async def on_a_loop_that_ends() -> None:
        fetches: list[asyncio.Future[bool]] = []

        def never_answered(key: str) -> asyncio.Future[bool]:
            fetches.append(asyncio.get_running_loop().create_future())
            return fetches[-1]

        lookup.fetch_on_loop = never_answered
        started = lookup.begin(["ada"], on_loop=True)
        (flight,) = started.pending.values()
        fetches[0].cancel()  # as the loop's end cancels what is under way
        await asyncio.sleep(0)
        assert flight.done() and flight.result() is None

    clock.now += breaker.probe_interval
    asyncio.run(on_a_loop_that_ends())
    clock.now += breaker.probe_interval
    lookup.fetch_on_loop = None
    assert answer(lookup, "ada").value is True, "the next probe went, and closed the breaker"
    assert not breaker.is_open

    for _ in range(breaker.min_calls):
        breaker.failure()
    clock.now += breaker.probe_interval
    joined: concurrent.futures.Future[Any] = concurrent.futures.Future()
    lookup._in_flight["bob"] = (
        joined  # another thread's flight, begun as this probe was let through
    )
    assert breaker.allow()
    assert lookup._start("bob") is joined
    clock.now += breaker.probe_interval
    assert breaker.allow(), "the probe that joined went back"
