"""The circuit breaker and the back-off, on their own."""

from __future__ import annotations

import pytest

from tests.support import Clock
from vwo_heap_middleware.gateway.breaker import (
    BREAKER_CLOSED,
    BREAKER_OPENED,
    Backoff,
    CircuitBreaker,
)


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


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.25, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.25


def test_jittered_backoff_stays_in_the_upper_half() -> None:
    backoff = Backoff(8.0, 8.0, jitter=True)
    delays = [backoff.next() for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100, "workers do not retry in step"
