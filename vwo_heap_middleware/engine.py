"""``FlagEngine``: the one configured core every adapter shares.

It loads VWO settings in the background, looks up Heap segment memberships and user details
before evaluation (``lookups``), decides natively or through the SDK (``decider``), caches
decisions per settings revision, and never lets a request wait longer than its budget.
Offline (``FlagEngine.offline``) it reads settings and segments from files, with no network.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from . import vwo_sdk
from .config import Config
from .decider import Decider, Plan
from .decision import FlagDecision, Reason
from .events import EventSpool
from .flag_index import FlagIndex
from .gateway_client import Gateway, GatewayClient
from .lookups import GatewayLookups
from .observers import Observer, Observers
from .offline import FlagsSource, OfflineGateway, SegmentsSource
from .visitor import RequestFacts, Visitor
from .vwo_settings import SettingsLoop

logger = logging.getLogger("vwo_heap_middleware")

SETTINGS_LOADED = "VWO settings loaded: revision %s, %d flags"
UNKNOWN_FLAGS = "VWO_HEAP_FLAGS names flags these settings lack: %s; they have: %s"
ENGINE_FAILED = "flag evaluation failed; serving defaults"


class FlagEngine:
    """Decides flags for visitors. Build one per process from a ``Config``; share it."""

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise TypeError("FlagEngine needs a vwo_heap_middleware.Config")
        self._offline = OfflineGateway.from_config(config) if config.offline else None
        if self._offline is not None:
            config = self._offline.account_filled_in(config)
        self.config = config
        self._client = self._new_client()
        self._lookups = GatewayLookups(config, self._client)
        shared = self._lookups.shared  # Redis, when configured: impressions once, sticky decisions
        first, storage = (shared.first_impression, shared.storage()) if shared else (None, None)
        deliver = self._offline is None
        self.events = EventSpool(
            config.event_spool_size,
            config.gateway_url,
            deliver,
            first,
            ca_file=config.gateway_ca_file,
        )
        self._sdk = vwo_sdk.VwoSdk(config, self.events.add, storage)
        self._index: FlagIndex | None = None
        self._pid: int | None = None
        self._closed = False
        self._ready = threading.Event()
        self._start_lock = threading.RLock()
        self._first_decision = True  # until this process waited for the first settings answer
        self._decider = Decider(config, self._lookups, self._sdk, self.events.add)
        self.observers = self._lookups.observers = self._decider.observers = Observers()
        if config.otel:
            from .otel import FlagTelemetry  # the [otel] extra, only when asked for

            self.add_observer(FlagTelemetry(self))
        self._settings = SettingsLoop(
            lambda: self._lookups.timed("settings", self._client.fetch_settings),
            self.apply_settings,
            config.settings_refresh_interval,
        )

    @classmethod
    def offline(
        cls, flags: FlagsSource, segments: SegmentsSource | None = None, **config: Any
    ) -> FlagEngine:
        """An engine that decides from a flags file (or settings JSON) and a segments file,
        ready at once, with no network; impressions are counted, not sent."""
        return cls(Config(offline_flags=flags, offline_segments=segments, **config))

    def start(self) -> None:
        """Begin loading settings in the background; returns at once. Safe to call again, and
        after ``close()`` (a test's lifespan): the engine then starts afresh."""
        with self._start_lock:
            if self._closed:
                self._closed = False
                self._renew()
            running = self._settings.running if self._offline is None else self.ready
            if self._pid == os.getpid() and running:
                return
            self._sdk.prepare()
            if self._pid is None:  # the first start: never at import
                os.register_at_fork(after_in_child=_after_fork_in_child(weakref.ref(self)))
                atexit.register(self.close)
            self._pid = os.getpid()
            if self._offline is not None:
                self.apply_settings(self._offline.settings)  # ready at once
            else:
                self._settings.start()

    def postfork(self) -> None:
        """Re-initialise in a forked worker (gunicorn ``--preload``): new connections, caches
        and threads. Called on first use in a child; call it yourself in a post-fork hook."""
        with self._start_lock:
            if self._pid in (None, os.getpid()) or self._closed:
                return
            self._renew()
            self.start()

    def _renew(self) -> None:
        self._client = self._new_client()
        self._lookups.reset(self._client)
        self.events.reset()
        self._settings.forget_thread()
        self._first_decision = not self.ready

    def _new_client(self) -> Gateway:
        return self._offline if self._offline is not None else GatewayClient(self.config)

    def _forked(self) -> None:
        """In a new child, while it has one thread: locks a parent thread may have held."""
        self._start_lock = threading.RLock()
        self._decider.forget()
        self._ready = threading.Event()
        if self._index is not None:
            self._ready.set()

    def close(self, timeout: float | None = None) -> None:
        """Stop every thread the engine or the SDK started; spooled events get ``timeout`` s
        (default ``Config.flush_timeout``) to be sent, and what is left is logged."""
        self._closed = True
        self._lookups.close()
        self.events.close(self.config.flush_timeout if timeout is None else timeout)
        self._settings.stop(1.0)
        self._client.close()
        self._sdk.release()

    def wait_ready(self, timeout: float) -> bool:
        """Block until settings are loaded, at most ``timeout`` seconds; returns ``ready``."""
        self._ensure_process()
        self._ready.wait(timeout)
        return self.ready

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the first settings attempt has an answer (loaded, or failed), at most
        ``timeout`` (default ``Config.startup_wait``) seconds; returns ``ready``."""
        self._ensure_process()
        if not self.ready:
            wait = self.config.startup_wait if timeout is None else timeout
            self._settings.answered.wait(wait)
        self._first_decision = False  # waited once in this process: never again
        return self.ready

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """True once settings are loaded and the SDK can decide."""
        return self._index is not None and self._sdk.loaded and not self._closed

    def readiness(self) -> dict[str, Any]:
        """A health-check payload: ``{"ready": bool, ...}``. Starts a forked worker's loading."""
        self._ensure_process()
        return {
            "ready": self.ready,
            "revision": self._index.revision if self._index else None,
            "flags": sorted(self._index.flags) if self._index else [],
            "gateway_circuit_open": self._lookups.breaker.is_open,
            "last_error": self._settings.last_error,
            **self._decider.readiness(),
        }

    def stats(self) -> dict[str, int]:
        """Counters: gateway lookups, events sent/dropped/held, cached decisions."""
        return {**self._lookups.stats(), **self.events.stats(), **self._decider.stats()}

    def flush_events(self, timeout: float = 2.0) -> bool:
        """Send spooled events now, waiting at most ``timeout`` s; True when all were sent."""
        return self.events.flush(timeout)

    def _ensure_process(self) -> None:
        if self._pid is None:
            if not self._closed:
                self.start()
        elif self._pid != os.getpid():
            self.postfork()

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Use these VWO settings from now on (the background loop calls this).

        Raises ``vwo_sdk.SettingsRejected`` and keeps the settings it had when the SDK refuses.
        """
        index = FlagIndex.from_settings(settings)
        if self._index is not None and index.revision == self._index.revision:
            return
        self._decider.load(settings)  # forgets what was decided on the settings before
        self._index = index
        self._ready.set()
        extra = {"settings_revision": index.revision, "flag_count": len(index.flags)}
        logger.info(SETTINGS_LOADED, index.revision, len(index.flags), extra=extra)
        missing = [key for key in self.config.flags if key not in index.flags]
        if missing:  # once per revision: a typo would otherwise show only as unknown_flag
            logger.warning(UNKNOWN_FLAGS, ", ".join(missing), ", ".join(sorted(index.flags)))
        self.observers.settings_loaded(index.revision, len(index.flags))

    def knows(self, key: str) -> bool:
        """True when the settings in use have a flag ``key``."""
        return self._index is not None and key in self._index.flags

    def reads_user_agent(self, keys: Iterable[str]) -> bool:
        """True when any of these flags' rules read the User-Agent header (``Vary`` names it)."""
        return self._index is not None and self._index.reads_user_agent(keys)

    def add_observer(self, observer: Observer) -> None:
        """See what the engine does (``observers.Observer``): OpenFeature, OpenTelemetry."""
        self.observers.add(observer)

    def recall(
        self, facts: RequestFacts, keys: Iterable[str]
    ) -> tuple[Visitor, dict[str, FlagDecision]] | None:
        """A returning visitor and their decisions of ``keys`` by the request's facts, when
        nothing can have changed them (``returning``); else None."""
        ready = self.ready and self._pid == os.getpid()
        return self._decider.recall(self._index, facts, keys) if ready else None

    def decide(
        self,
        visitor: Visitor,
        keys: Iterable[str],
        *,
        timeout: float | None = None,
        facts: RequestFacts | None = None,
    ) -> dict[str, FlagDecision]:
        """Decide ``keys`` for ``visitor``, waiting at most ``timeout`` (default: the budget);
        ``facts``, the request's, to ``recall`` these decisions by.

        Never raises: an unexpected failure gives each flag its default, reason ``error``.
        """
        keys = list(keys)
        try:
            plan = self._plan(visitor, keys, timeout)
            if plan.pending is not None:
                plan.pending.wait(plan.left())
                self._decider.finish(plan, visitor)
            return self._decider.done(plan, visitor, facts)
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._decider.defaults(keys, Reason.ERROR)

    async def decide_async(
        self,
        visitor: Visitor,
        keys: Iterable[str],
        *,
        timeout: float | None = None,
        facts: RequestFacts | None = None,
    ) -> dict[str, FlagDecision]:
        """``decide`` for async code: membership lookups run on the event loop (a plain-HTTP
        gateway), others concurrently on the engine's threads; nothing blocks the loop."""
        keys = list(keys)
        try:
            if self._first_decision:  # a new worker: wait for settings off the loop
                await asyncio.to_thread(self.wait_started)
            plan = self._plan(visitor, keys, timeout, on_loop=True)
            if plan.pending is not None:
                await plan.pending.wait_async(plan.left())
                self._decider.finish(plan, visitor)
            return self._decider.done(plan, visitor, facts)
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._decider.defaults(keys, Reason.ERROR)

    def _plan(
        self, visitor: Visitor, keys: list[str], timeout: float | None, on_loop: bool = False
    ) -> Plan:
        self._ensure_process()
        if self._first_decision:  # a new worker's first decision: not a default while loading
            self.wait_started()
        budget = self.config.evaluation_timeout if timeout is None else timeout
        ready = self._index if self.ready else None
        return self._decider.plan(ready, visitor, keys, time.monotonic() + budget, on_loop)


def _after_fork_in_child(engine: weakref.ref[FlagEngine]) -> Callable[[], object]:
    def hook() -> None:
        alive = engine()
        if alive is not None:
            alive._forked()

    return hook
