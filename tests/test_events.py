"""The event sender on its own: one thread, a bounded queue, flush, close, and what it counts."""

from __future__ import annotations

import functools
import threading

import pytest

from vwo_heap_middleware.events import EVENT_DROPPED, SEND_FAILED, EventSender


def record(seen: list[tuple[int, str]], n: int) -> None:
    seen.append((n, threading.current_thread().name))


def test_sends_in_order_on_one_thread() -> None:
    sender = EventSender(100)
    seen: list[tuple[int, str]] = []
    for n in range(20):
        sender.submit(functools.partial(record, seen, n))
    assert sender.flush(5.0)
    assert [n for n, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"vwo-heap-events"}
    assert sender.sent == 20
    sender.close(1.0)


def test_a_full_queue_drops_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    sender = EventSender(2)
    gate = threading.Event()
    running = threading.Event()

    def blocked() -> None:
        running.set()
        gate.wait(5)

    sender.submit(blocked)
    assert running.wait(5)  # the thread holds the first event; the queue is empty again
    sender.submit(lambda: None)
    sender.submit(lambda: None)
    sender.submit(lambda: None)  # the third does not fit
    assert sender.dropped == 1
    assert EVENT_DROPPED % (2, 1) in caplog.text
    gate.set()
    assert sender.flush(5.0)
    assert sender.sent == 3
    sender.close(1.0)


def test_a_failing_send_is_logged_and_the_sender_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = EventSender(10)

    def broken() -> None:
        raise ConnectionError("gateway gone")

    sender.submit(broken)
    sender.submit(lambda: None)
    assert sender.flush(5.0)
    assert SEND_FAILED in caplog.text
    assert sender.sent == 1
    sender.close(1.0)


def test_close_sends_what_is_queued_then_drops_the_rest() -> None:
    sender = EventSender(10)
    seen: list[tuple[int, str]] = []
    for n in range(5):
        sender.submit(functools.partial(record, seen, n))
    sender.close(5.0)
    assert [n for n, _ in seen] == list(range(5))
    sender.submit(functools.partial(record, seen, 99))
    assert sender.dropped == 1 and len(seen) == 5


def test_after_a_fork_or_a_restart_the_sender_starts_afresh() -> None:
    sender = EventSender(10)
    sender.close(1.0)
    sender.reset()
    seen: list[int] = []
    sender.submit(lambda: seen.append(1))
    assert sender.flush(5.0)
    assert seen == [1]
    sender.close(1.0)
