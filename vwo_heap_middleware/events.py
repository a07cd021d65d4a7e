"""One long-lived sender for the SDK's impressions and events, instead of a thread per event.

The SDK hands each network send to ``NetworkManager.execute_in_background``, which starts a new
``ThreadPoolExecutor`` every time. ``EventSender`` runs the same send functions, unchanged, on one
daemon thread fed by a bounded queue; when the queue is full an event is dropped and counted,
so a slow gateway never blocks a request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger("vwo_heap_middleware")
EVENT_DROPPED = "event queue full (%d): dropped an SDK event (%d dropped so far)"
SEND_FAILED = "an SDK event send failed"


class EventSender:
    """``deliver=False`` (the offline engine): events are counted in ``held``, never sent."""

    def __init__(self, maxsize: int, *, deliver: bool = True) -> None:
        self.maxsize = maxsize
        self.deliver = deliver
        self.sent = 0
        self.dropped = 0
        self.held = 0
        self.closed = False
        self._queue: queue.Queue[Callable[[], object] | threading.Event | None] = queue.Queue(
            maxsize
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, send: Callable[[], object]) -> None:
        if not self.deliver:
            self.held += 1
            return
        if self.closed:  # the engine closed: the process is going away
            self.dropped += 1
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(send)
        except queue.Full:
            self.dropped += 1
            logger.warning(EVENT_DROPPED, self.maxsize, self.dropped)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="vwo-heap-events", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            send = self._queue.get()
            if send is None:
                return
            if isinstance(send, threading.Event):  # a flush marker
                send.set()
                continue
            try:
                send()
                self.sent += 1
            except Exception:
                logger.exception(SEND_FAILED)

    def stats(self) -> dict[str, int]:
        return {
            "events_sent": self.sent,
            "events_dropped": self.dropped,
            "events_held": self.held,
            "events_queued": self._queue.qsize(),
        }

    def flush(self, timeout: float) -> bool:
        """Wait until queued events are sent, at most ``timeout`` seconds; True if all were."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        self._ensure_thread()
        return done.wait(timeout)

    def close(self, timeout: float) -> None:
        """Send what is queued within ``timeout``, then stop the (daemon) thread."""
        self.closed = True
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)

    def reset(self) -> None:
        """Start afresh (a forked child, or an engine started again after ``close()``)."""
        self.closed = False
        self._queue = queue.Queue(self.maxsize)
        self._thread = None
        self._lock = threading.Lock()
