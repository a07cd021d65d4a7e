"""VWO settings, fetched from the gateway on a background thread and refreshed on a timer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .breaker import Backoff

logger = logging.getLogger("vwo_heap_middleware")

SETTINGS_FAILED = "cannot load VWO settings from the gateway (%s); next try in %.1f s"
FIRST_RETRY = 0.25
MAX_RETRY_DELAY = 30.0


class SettingsLoop:
    """Calls ``apply(fetch())`` now and every ``refresh`` seconds; after a failure it retries
    sooner, backing off from 0.25 s to at most 30 s. ``last_error`` says what last went wrong."""

    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        apply: Callable[[dict[str, Any]], None],
        refresh: float,
    ) -> None:
        self._fetch = fetch
        self._apply = apply
        self._refresh = refresh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.answered = threading.Event()  # the first attempt is over: loaded, or failed
        self.loaded = threading.Event()  # settings were applied (by the loop, or ``load``)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vwo-heap-settings", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def load(self, settings: dict[str, Any]) -> None:
        """Apply ``settings`` now (an offline engine's, or any the caller has)."""
        self._apply(settings)
        self.loaded.set()

    def reset(self) -> None:
        """Forget the thread (stopped, or a parent's in a forked child) and renew the events
        (a parent's thread may have held their locks); whether settings were loaded stays."""
        self._thread = None
        self.answered = threading.Event()
        loaded, self.loaded = self.loaded.is_set(), threading.Event()
        if loaded:
            self.loaded.set()

    def _run(self) -> None:
        backoff = Backoff(FIRST_RETRY, MAX_RETRY_DELAY)
        while not self._stop.is_set():
            try:
                self.load(self._fetch())
                self.last_error = None
                backoff.reset()
                wait = self._refresh
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                wait = backoff.next()
                logger.warning(SETTINGS_FAILED, self.last_error, wait)
            self.answered.set()
            self._stop.wait(wait)
