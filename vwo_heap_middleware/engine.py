"""``FlagEngine``: the one configured core every adapter shares, and its composition root.

It builds every part and hands each its collaborators (gateway client, Redis, event spool, SDK
door, lookups, caches, decider, settings loop). A decision is planned (pure), its lookups started
and waited for (where ``decide`` and ``decide_async`` differ), finished (pure), events spooled."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import Config
from .decider import Decider, Plan
from .decision import FlagDecision, Reason
from .evaluation.caches import DecisionCaches
from .evaluation.custom_events import Tracked, for_visitor
from .evaluation.flag_index import FlagIndex
from .evaluation.impressions import SdkFacts
from .explain import Explanation, explain
from .gateway.client import Gateway, GatewayClient
from .gateway.events import EventSpool
from .gateway.lookups import GatewayLookups, Pending
from .gateway.settings_loop import SettingsLoop
from .observers import Observer, Observers
from .offline.gateway import FlagsSource, OfflineGateway, SegmentsSource
from .state.kept_settings import SettingsKeeper
from .visitor import RequestFacts, Visitor
from .vwo_sdk import VwoSdk

logger = logging.getLogger("vwo_heap_middleware")

ENGINE_FAILED = "flag evaluation failed; serving defaults"


class FlagEngine:
    """Decides flags for visitors. Build one per process from a ``Config``; share it."""

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise TypeError("FlagEngine needs a vwo_heap_middleware.Config")
        self._offline, config = OfflineGateway.open(config)
        self.config = config
        self.observers = Observers(config.log_key)
        redis = None
        if config.redis_url is not None:
            from .gateway.redis_store import RedisStore  # the [redis] extra, only when asked for

            redis = RedisStore(config)
        first = redis.first_impression if redis else None
        self.events = EventSpool.of(config, deliver=self._offline is None, first=first)
        self._sdk = VwoSdk(config, self.events.add, redis.storage() if redis else None)
        self._client: Gateway = self._offline or GatewayClient(config)
        self._lookups = GatewayLookups(config, self._client, shared=redis, observers=self.observers)
        self.aliases = self._lookups.links
        self._caches = DecisionCaches(config)
        self._decider = Decider(config, self._sdk, self._caches.decisions)
        self._index: FlagIndex | None = None
        self._facts: SdkFacts | None = None
        self._pid: int | None = None
        self._started_here = False  # started in this process (a fork hook clears it)
        self._closed = False
        self._start_lock = threading.RLock()
        self._first_decision = True  # until this process waited for the first settings answer
        self._settings_loop = SettingsLoop(
            lambda: self._lookups.timed("settings", self._client.fetch_settings),
            self.apply_settings,
            config.settings_refresh_interval,
            None if self._offline else SettingsKeeper(config, redis),
        )
        if config.otel:
            from .otel import FlagTelemetry  # the [otel] extra, only when asked for

            self.add_observer(FlagTelemetry(self))

    @classmethod
    def offline(
        cls,
        offline_flags: FlagsSource,
        offline_segments: SegmentsSource | None = None,
        **config: Any,
    ) -> FlagEngine:
        """An engine deciding from files (``Config``'s fields of those names), ready at once:
        no network, impressions counted."""
        return cls(Config(offline_flags=offline_flags, offline_segments=offline_segments, **config))

    def start(self) -> None:
        """Begin loading settings in the background; returns at once. Safe to call again, and
        after ``close()`` (a test's lifespan): the engine then starts afresh."""
        with self._start_lock:
            if self._closed:
                self._closed = False
                self._renew()
            running = self._settings_loop.running if self._offline is None else self.ready
            if self._pid == os.getpid() and running:
                return
            self._sdk.prepare()
            if self._pid is None:  # the first start: never at import
                forked = weakref.WeakMethod(self._forked)  # a hook must not keep us alive
                os.register_at_fork(after_in_child=lambda: (hook := forked()) and hook())
                atexit.register(self.close)
            # Before _pid says started: a request that sees it started finds the journal open.
            self.events.start()  # a state directory: this process's journal, and orphans
            self._pid = os.getpid()
            self._started_here = True
            if self._offline is not None:
                self._settings_loop.load(self._offline.settings, "offline")  # ready at once
            else:
                self._settings_loop.start()

    def postfork(self) -> None:
        """Re-initialise in a forked worker (gunicorn ``--preload``): new connections, caches
        and threads. Called on first use in a child; call it yourself in a post-fork hook."""
        with self._start_lock:
            if self._pid in (None, os.getpid()) or self._closed:
                return
            self._renew()
            self.start()

    def _renew(self) -> None:
        self._client = self._offline or GatewayClient(self.config)
        self._lookups.reset(self._client)
        self.events.reset()
        self._settings_loop.reset()
        self._first_decision = not self.ready

    def _forked(self) -> None:
        """In a new child, with one thread: new locks (a parent's thread may have held them)."""
        self._start_lock = threading.RLock()
        self._started_here = False
        self._settings_loop.reset()
        self._caches.reset()

    def close(self, timeout: float | None = None) -> None:
        """Stop every thread; spooled events get ``timeout`` s (``Config.flush_timeout``)."""
        self._closed = True
        self._lookups.close()
        self._settings_loop.stop(1.0)  # first: a load under way makes the SDK's init event
        self.events.close(self.config.flush_timeout if timeout is None else timeout)
        self._client.close()
        self._sdk.release()

    def wait_ready(self, timeout: float) -> bool:
        """Block until settings are loaded, at most ``timeout`` seconds; returns ``ready``."""
        self._ensure_process()
        self._settings_loop.loaded.wait(timeout)
        return self.ready

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait for the first settings answer (``timeout``: ``startup_wait`` s); ``ready``."""
        self._ensure_process()
        if not self.ready:
            wait = self.config.startup_wait if timeout is None else timeout
            self._settings_loop.answered.wait(wait)
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
            **self._lookups.readiness(),
            **self._settings_loop.readiness(),
            **self._decider.readiness(),
        }

    def stats(self) -> dict[str, int]:
        """Counters: gateway lookups, events sent/dropped/held, cached decisions."""
        return {**self._lookups.stats(), **self.events.stats(), **self._caches.stats()}

    def track(
        self, visitor: Visitor, event_name: str, properties: Mapping[str, Any] | None = None
    ) -> Tracked:
        """``visitor`` converted: ``event_name`` (a flag's metric), as ``track_event`` would."""
        return self._custom_event(visitor, event_name, properties)

    def set_attributes(self, visitor: Visitor, attributes: Mapping[str, Any]) -> Tracked:
        """Visitor attributes for VWO (str, int, float or bool), as ``set_attribute``."""
        return self._custom_event(visitor, None, attributes)

    def _custom_event(self, visitor: Visitor, name: str | None, values: object) -> Tracked:
        self._ensure_process()
        facts = self._facts or self._sdk.facts()
        return self.aliases.spool(  # as the id the visitor's is an alias of, if any
            visitor,
            lambda v: for_visitor(self._index, facts, v.context, name, values),
            self.events,
        )

    def flush_events(self, timeout: float = 2.0) -> bool:
        """Send spooled events now, waiting at most ``timeout`` s; True when all were sent."""
        return self.events.flush(timeout)

    def _ensure_process(self) -> None:
        if self._pid is None and not self._closed:
            self.start()
        elif self._pid is not None and self._pid != os.getpid():
            self.postfork()

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Use these VWO settings from now on (``vwo_sdk.SettingsRejected``: SDK refused)."""
        index = self._decider.load(settings, self._index)
        if index is not None:
            self._caches.reset()  # decided on the settings before
            self._facts = self._sdk.facts()  # what conversions carry of the SDK, once
            self._index = index
            self._settings_loop.loaded.set()
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
        self, facts: RequestFacts
    ) -> tuple[Callable[[], Visitor], Mapping[str, FlagDecision]] | None:
        """A returning visitor (a function that builds them) and their ``Config.flags``."""
        if not (self._started_here and self.ready):
            return None
        recalled = self._caches.recall(facts, self._index)
        if recalled is not None:
            self.observers.report(*recalled, cached=len(recalled[1]))
        return recalled

    def explain(self, key: str, visitor: Visitor, timeout: float | None = None) -> Explanation:
        """Why ``visitor`` gets flag ``key``, sending no impression (see ``explain``)."""
        index = self._index if self.wait_ready(self.config.startup_wait) else None
        return explain(self._decider, self._lookups, index, key, visitor, timeout)

    def decide(
        self,
        visitor: Visitor,
        keys: Iterable[str],
        *,
        timeout: float | None = None,
        facts: RequestFacts | None = None,
    ) -> dict[str, FlagDecision]:
        """Decide ``keys`` for ``visitor``, waiting at most ``timeout`` (default: the budget);
        ``facts``: the request's, to ``recall`` them by. Never raises: a failure gives defaults."""
        keys = list(keys)
        try:
            plan, pending, visitor = self._begin(visitor, keys, timeout, on_loop=False)
            if pending is not None:
                pending.wait(plan.left())
            return self._finish(plan, pending, visitor, facts)
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
        """``decide`` for async code: lookups on the event loop (or the engine's threads)."""
        keys = list(keys)
        try:
            if self._first_decision:  # a new worker: wait for settings off the loop
                await asyncio.to_thread(self.wait_started)
            plan, pending, visitor = self._begin(visitor, keys, timeout, on_loop=True)
            if pending is not None:
                await pending.wait_async(plan.left())
            return self._finish(plan, pending, visitor, facts)
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._decider.defaults(keys, Reason.ERROR)

    def _begin(
        self, visitor: Visitor, keys: list[str], timeout: float | None, on_loop: bool
    ) -> tuple[Plan, Pending | None, Visitor]:
        """Plan the decision and start the lookups it needs (and the visitor's alias's)."""
        self._ensure_process()
        if self._first_decision:  # a new worker's first decision: not a default while loading
            self.wait_started()
        index = self._index if self.ready else None
        visitor, expires, alias = self.aliases.begin(visitor, on_loop, ready=index is not None)
        deadline = time.monotonic() + (
            self.config.evaluation_timeout if timeout is None else timeout
        )
        plan = self._decider.plan(index, visitor, keys, deadline, alias is None, expires)
        if not plan.todo and alias is None:
            return plan, None, visitor
        pending = self._lookups.begin(plan.memberships, plan.details, on_loop, alias, plan.left())
        return plan, pending, visitor

    def _finish(
        self, plan: Plan, pending: Pending | None, visitor: Visitor, facts: RequestFacts | None
    ) -> dict[str, FlagDecision]:
        """Decide on the answers, spool the events, remember a returning visitor, report."""
        if pending is not None and pending.alias is not None:
            visitor, expires = self.aliases.landed(visitor, pending.alias)  # decide as that id
            plan = self._decider.plan(plan.index, visitor, plan.keys, plan.deadline, True, expires)
        if pending is not None:
            memberships, details = pending.finish()
            detail = details.get(plan.details) if plan.details else None
            for event in self._decider.finish(plan, visitor, memberships, detail):
                self.events.add(event)
        self.observers.report(visitor, plan.results, plan.cached)
        if facts is not None:
            self._caches.remember(facts, plan.revision, visitor, plan.results, plan.expires)
        return plan.results
