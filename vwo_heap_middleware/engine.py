"""``FlagEngine``: the one configured core every adapter shares.

It loads VWO settings in the background, looks up Heap segment memberships and user details
before evaluation (``lookups``), has the SDK decide (``vwo_sdk``), caches decisions per settings
revision, and never lets a request wait longer than its budget.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import vwo_sdk
from .config import Config
from .decision import DecisionCache, FlagDecision, Reason
from .events import EventSender
from .flag_index import FlagIndex, FlagNeeds
from .gateway_client import GatewayClient
from .lookups import (
    AnswerStatus,
    DetailsKey,
    GatewayLookups,
    Pending,
)
from .visitor import Visitor
from .vwo_settings import SettingsLoop

logger = logging.getLogger("vwo_heap_middleware")

SETTINGS_LOADED = "VWO settings loaded: revision %s, %d flags"
ENGINE_FAILED = "flag evaluation failed; serving defaults"
ENGINE_CLOSED = "this FlagEngine is closed; build a new one"


@dataclass
class _Plan:
    """One ``decide`` call: what the caches answered, and the lookups the rest waits for."""

    deadline: float
    results: dict[str, FlagDecision] = field(default_factory=dict)
    todo: dict[str, tuple[FlagNeeds, tuple[Any, ...]]] = field(default_factory=dict)
    details: DetailsKey | None = None
    pending: Pending | None = None


class FlagEngine:
    """Decides flags for visitors. Build one per process from a ``Config``; share it."""

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise TypeError("FlagEngine needs a vwo_heap_middleware.Config")
        self.config = config
        self.events = EventSender(config.impression_queue_size)
        self._sdk = vwo_sdk.VwoSdk(config, self.events.submit)
        self._client = GatewayClient(config)
        self._lookups = GatewayLookups(config, self._client)
        self._index: FlagIndex | None = None
        self._pid: int | None = None
        self._closed = False
        self._ready = threading.Event()
        self._start_lock = threading.RLock()
        self._decisions = DecisionCache(config.cache_size, config.decision_ttl)
        self._settings = SettingsLoop(
            lambda: self._client.fetch_settings(),
            self.apply_settings,
            config.settings_refresh_interval,
        )

    def start(self) -> None:
        """Begin loading settings in the background; returns at once. Safe to call again."""
        with self._start_lock:
            if self._closed:
                raise RuntimeError(ENGINE_CLOSED)
            if self._pid == os.getpid() and self._settings.running:
                return
            self._sdk.claim()
            if self._pid is None:  # the first start: never at import
                os.register_at_fork(after_in_child=_after_fork_in_child(weakref.ref(self)))
                atexit.register(self.close)
            self._pid = os.getpid()
            self._settings.start()

    def postfork(self) -> None:
        """Re-initialise in a forked worker (gunicorn ``--preload``): new connections, caches
        and threads. Called on first use in a child; call it yourself in a post-fork hook."""
        with self._start_lock:
            if self._pid in (None, os.getpid()) or self._closed:
                return
            self._client = GatewayClient(self.config)
            self._lookups.reset(self._client)
            self.events.reset_after_fork()
            self._sdk.after_fork()
            self._settings.forget_thread()
            self.start()

    def _forked(self) -> None:
        """In a new child, while it has one thread: locks a parent thread may have held."""
        self._start_lock = threading.RLock()
        self._decisions.reset()
        self._ready = threading.Event()
        if self._index is not None:
            self._ready.set()

    def close(self, timeout: float = 1.0) -> None:
        """Stop every thread the engine or the SDK started; queued events get ``timeout`` s."""
        self._closed = True
        self._lookups.close()
        self.events.close(timeout)
        self._settings.stop(timeout)
        self._client.close()
        self._sdk.release()

    def wait_ready(self, timeout: float) -> bool:
        """Block until settings are loaded, at most ``timeout`` seconds; returns ``ready``."""
        self._ensure_process()
        self._ready.wait(timeout)
        return self.ready

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
            "sdk_version": vwo_sdk.sdk_version(),
            "sdk_patches": list(vwo_sdk.installed()),
        }

    def stats(self) -> dict[str, int]:
        return {
            "membership_calls": self._lookups.memberships.calls,
            "user_details_calls": self._lookups.user_details.calls,
            "circuit_opened": self._lookups.breaker.opened,
            "events_sent": self.events.sent,
            "events_dropped": self.events.dropped,
            "cached_decisions": len(self._decisions),
        }

    def flush_events(self, timeout: float = 2.0) -> bool:
        """Wait until queued SDK events are sent (tests, graceful shutdown)."""
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
        self._sdk.load(settings)
        self._index = index
        self._ready.set()
        self._decisions.reset()
        logger.info(SETTINGS_LOADED, index.revision, len(index.flags))

    def decide(
        self, visitor: Visitor, keys: Iterable[str], *, timeout: float | None = None
    ) -> dict[str, FlagDecision]:
        """Decide ``keys`` for ``visitor``, waiting at most ``timeout`` (default: the budget).

        Never raises: an unexpected failure gives each flag its default, reason ``error``.
        """
        keys = list(keys)
        try:
            plan = self._plan(visitor, keys, timeout)
            if plan.pending is not None:
                if plan.pending.futures:
                    concurrent.futures.wait(plan.pending.futures, timeout=_left(plan.deadline))
                self._evaluate(plan, visitor)
            return plan.results
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._defaults(keys, Reason.ERROR)

    async def decide_async(
        self, visitor: Visitor, keys: Iterable[str], *, timeout: float | None = None
    ) -> dict[str, FlagDecision]:
        """``decide`` for async code: gateway lookups run concurrently, off the event loop."""
        keys = list(keys)
        try:
            plan = self._plan(visitor, keys, timeout)
            if plan.pending is not None:
                if plan.pending.futures:
                    waiters = [asyncio.wrap_future(f) for f in plan.pending.futures]
                    await asyncio.wait(waiters, timeout=_left(plan.deadline))
                    for waiter in waiters:
                        waiter.cancel()  # only the asyncio view: the shared lookup goes on
                self._evaluate(plan, visitor)
            return plan.results
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._defaults(keys, Reason.ERROR)

    def _plan(self, visitor: Visitor, keys: list[str], timeout: float | None) -> _Plan:
        """Answer what the caches know; start the gateway lookups the rest needs."""
        self._ensure_process()
        budget = self.config.evaluation_timeout if timeout is None else timeout
        plan = _Plan(time.monotonic() + budget)
        index, context = self._index, visitor.context
        if index is None or not self._sdk.loaded or self._closed:
            plan.results = self._defaults(keys, Reason.NOT_READY)
            return plan
        if context is None:
            plan.results = self._defaults(keys, Reason.NO_USER)
            return plan
        custom = context["custom_variables"]
        facts = (context.get("user_agent"), context.get("ip_address"))
        base = (index.revision, visitor.user_id, tuple(sorted(custom.items())))
        for key in keys:
            needs = index.flags.get(key)
            if needs is None:
                plan.results[key] = self._default(key, Reason.UNKNOWN_FLAG)
                continue
            cache_key = (key, *base, facts if needs.request_facts else None)
            cached = self._decisions.get(cache_key)
            if cached is not None:
                plan.results[key] = cached
            else:
                plan.todo[key] = (needs, cache_key)
        if plan.todo:
            memberships = {m for needs, _ in plan.todo.values() for m in needs.memberships(custom)}
            if any(needs.user_details for needs, _ in plan.todo.values()) and any(facts):
                plan.details = facts
            plan.pending = self._lookups.begin(memberships, plan.details)
        return plan

    def _default(self, key: str, reason: Reason) -> FlagDecision:
        return FlagDecision.default(key, reason, self.config.default_for(key))

    def _defaults(self, keys: Iterable[str], reason: Reason) -> dict[str, FlagDecision]:
        return {key: self._default(key, reason) for key in keys}

    def _evaluate(self, plan: _Plan, visitor: Visitor) -> None:
        assert plan.pending is not None
        memberships, details = plan.pending.finish()
        detail = details.get(plan.details) if plan.details else None
        known = {key: a.value if a.known else None for key, a in memberships.items()}
        statuses = {answer.status for answer in memberships.values()}
        if detail is not None:
            statuses.add(detail.status)
        stale = AnswerStatus.STALE in statuses
        with_details = vwo_sdk.Answers(
            known,
            user_details=detail.value if detail is not None and detail.known else None,
            user_details_missing=detail is not None and not detail.known,
        )
        without_details = vwo_sdk.Answers(known)
        for key, (needs, cache_key) in plan.todo.items():
            answers = with_details if needs.user_details else without_details
            outcome = self._sdk.evaluate(key, visitor.context or {}, answers, visitor.user_id or "")
            if outcome.error:
                decision = self._default(key, Reason.ERROR)
            elif outcome.missing and not outcome.enabled:
                timed_out = AnswerStatus.TIMEOUT in statuses
                decision = self._default(key, Reason.TIMEOUT if timed_out else Reason.GATEWAY_ERROR)
            else:
                reason = Reason.TARGETED if outcome.enabled else Reason.NOT_TARGETED
                decision = FlagDecision(key, outcome.enabled, outcome.variables, reason, stale)
                if statuses <= {AnswerStatus.FRESH} and not outcome.missing:
                    self._decisions.put(cache_key, decision)
            plan.results[key] = decision


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _after_fork_in_child(engine: weakref.ref[FlagEngine]) -> Callable[[], object]:
    def hook() -> None:
        alive = engine()
        if alive is not None:
            alive._forked()

    return hook
