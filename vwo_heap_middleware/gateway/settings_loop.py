"""VWO settings, fetched from the gateway on a background thread and refreshed on a timer;
with a ``SettingsKeeper``, each revision that loads is kept, and a first fetch that fails falls
back to the newest kept revision."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..state.kept_settings import STARTED_FROM, SettingsKeeper
from .breaker import Backoff

logger = logging.getLogger("vwo_heap_middleware")

SETTINGS_FAILED = "cannot load VWO settings from the gateway (%s); next try in %.1f s"
KEPT_REFUSED = "the kept VWO settings from %s were refused (%s)"
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
        keeper: SettingsKeeper | None = None,
    ) -> None:
        self._fetch = fetch
        self._apply = apply
        self._refresh = refresh
        self._keeper = keeper
        self.source: str | None = None  # where the settings in use came from
        self.source_at: float | None = None  # and when they were fetched or kept (time.time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.kept_error: str | None = None  # why kept settings could not be used, if so
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

    def load(self, settings: dict[str, Any], source: str, at: float | None = None) -> None:
        """Apply ``settings`` now (an offline engine's, or any the caller has), from ``source``
        as of ``at`` (``time.time()``, now if not given)."""
        self._apply(settings)
        self.loaded.set()
        self.source, self.source_at = source, time.time() if at is None else at

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
        keeper = self._keeper
        while not self._stop.is_set():
            try:
                if keeper is None:
                    self.load(self._fetch(), "gateway")
                else:
                    loaded = keeper.fetch(self._fetch)
                    self.load(loaded.settings, loaded.source, loaded.kept_at)
                    keeper.keep(loaded)
                self.last_error = None
                backoff.reset()
                wait = self._refresh
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                wait = backoff.next()
                logger.warning(SETTINGS_FAILED, self.last_error, wait)
                if not self.loaded.is_set():
                    self._start_from_kept()
            self.answered.set()
            self._stop.wait(wait)

    def _start_from_kept(self) -> None:
        """The first fetch failed: the newest kept settings, if any are young enough. Never
        raises: whatever a kept source holds, the loop goes on asking the gateway."""
        kept = None
        try:
            kept = self._keeper.newest() if self._keeper is not None else None
            if kept is None:
                return
            self.load(kept.settings, kept.source, kept.kept_at)
        except Exception as exc:
            source = kept.source if kept is not None else "a kept source"
            self.kept_error = f"{type(exc).__name__}: {exc}"[:500]
            logger.error(KEPT_REFUSED, source, self.kept_error)
            return
        logger.warning(STARTED_FROM, kept.source, kept.age)

    def readiness(self) -> dict[str, Any]:
        """Where the settings in use came from (``gateway``, ``redis``, ``state_dir``,
        ``bootstrap``), how old they are, and what last went wrong."""
        age = time.time() - self.source_at if self.source_at is not None else None
        keeper = self._keeper
        return {
            "settings_source": self.source,
            "settings_age": None if age is None else round(max(age, 0.0), 1),
            "last_error": self.last_error,
            "kept_settings_error": self.kept_error or (keeper.last_error if keeper else None),
        }
