"""What keeps a failing service (the VWO gateway, Redis) from costing more than it must: a
``CircuitBreaker`` that stops calls for a while, and the ``Backoff`` of retries."""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("vwo_heap_middleware")
BREAKER_OPENED = "circuit open (%d of the last %d calls failed): answering without the service"
BREAKER_CLOSED = "circuit closed: the service answers again"


class CircuitBreaker:
    """Keeps lookups off a failing gateway, judged on a window of recent calls.

    It opens when, over the last ``window`` seconds, at least ``min_calls`` calls were made and
    ``ratio`` of them failed: a few slow calls on a busy machine do not open it, a gateway that
    is down does. While open, one probe call every ``probe_interval`` seconds tries the gateway,
    and the first that succeeds closes it: new visitors get answers soon after a fault clears.
    """

    def __init__(
        self,
        window: float = 10.0,
        min_calls: int = 10,
        ratio: float = 0.5,
        probe_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window, self.min_calls, self.ratio = window, min_calls, ratio
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: collections.deque[tuple[float, bool]] = collections.deque()
        self._open = False
        self._probing = False
        self._next_probe = 0.0
        self.opened = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        """May a call go to the gateway now? While open: only the probe."""
        with self._lock:
            if not self._open:
                return True
            now = self._clock()
            if self._probing or now < self._next_probe:
                return False
            self._probing, self._next_probe = True, now + self.probe_interval
            return True

    def release(self) -> None:
        """A call ``allow`` let through was not made after all, or was cancelled (its loop
        ended): the next probe may go, or the breaker would stay open for good."""
        with self._lock:
            self._probing = False

    def success(self) -> None:
        with self._lock:
            if self._open:
                self._open = self._probing = False
                self._calls.clear()
                logger.info(BREAKER_CLOSED, extra={"circuit": "closed"})
            else:
                self._record(True)

    def failure(self) -> None:
        with self._lock:
            if self._open:
                self._probing = False
                return
            self._record(False)
            failed = sum(1 for _, ok in self._calls if not ok)
            if len(self._calls) >= self.min_calls and failed >= self.ratio * len(self._calls):
                self._open, self._next_probe = True, self._clock() + self.probe_interval
                self.opened += 1
                logger.warning(BREAKER_OPENED, failed, len(self._calls), extra={"circuit": "open"})

    def _record(self, ok: bool) -> None:
        now = self._clock()
        self._calls.append((now, ok))
        while self._calls and self._calls[0][0] < now - self.window:
            self._calls.popleft()


class Backoff:
    """Retry delays: ``first`` seconds, doubling to at most ``most``; with ``jitter``, each
    delay is drawn from its upper half, so many workers do not retry in step."""

    def __init__(self, first: float, most: float, *, jitter: bool = False) -> None:
        self.first, self.most, self.jitter = first, most, jitter
        self._next = first

    def next(self) -> float:
        """The delay before the next try; each call doubles the one after."""
        delay, self._next = self._next, min(self._next * 2, self.most)
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay

    def reset(self) -> None:
        """A success: the next failure waits ``first`` again."""
        self._next = self.first
