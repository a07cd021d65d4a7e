"""``FlagEngine``: the one configured core every adapter shares.

It owns the VWO SDK for the process: loads settings in the background, fetches Heap segment
memberships and user details before evaluation (cached, single-flight, circuit-broken), calls
``get_flag`` one at a time (the SDK keeps per-call state in process-wide singletons), caches
decisions per settings revision, and never lets a request wait longer than its budget.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cachetools import TTLCache

from . import sdk_patches
from .config import Config
from .context import Visitor, short_hash
from .decision import FlagDecision, Reason
from .events import EventSender
from .flag_index import FlagIndex, FlagNeeds
from .gateway_client import GatewayClient, GatewayError
from .lookups import Answer, CachedLookup, CircuitBreaker, Started

logger = logging.getLogger("vwo_heap_middleware")

SETTINGS_LOADED = "VWO settings loaded: revision %s, %d flags"
SETTINGS_FAILED = "cannot load VWO settings from the gateway (%s); next try in %.1f s"
ENGINE_FAILED = "flag evaluation failed; serving defaults"
SDK_FAILED = "the VWO SDK failed on flag %r for user %s"
ONE_ENGINE = (
    "another FlagEngine is running in this process; the VWO SDK is a process-wide singleton: "
    "share one engine between adapters, or close() the other first"
)
MAX_RETRY_DELAY = 30.0
SETTINGS_TIMEOUT = 5.0

MembershipKey = tuple[str, str]  # (attribute list id, attribute value)
DetailsKey = tuple[str | None, str | None]  # (user agent, ip address)

_active: list[weakref.ref[FlagEngine]] = []
_active_lock = threading.Lock()


_held_for_fork: list[threading.Lock] = []


def _before_fork() -> None:
    """Fork only between SDK calls: a child must not inherit an SDK (or an import) half set up
    by the settings thread, which the child does not have."""
    engine = _active[0]() if _active else None
    if engine is not None and not engine._closed:
        lock = engine._sdk_lock
        if lock.acquire(timeout=5.0):
            _held_for_fork.append(lock)


def _after_fork() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


@dataclass
class _Plan:
    results: dict[str, FlagDecision] = field(default_factory=dict)
    todo: dict[str, tuple[FlagNeeds, tuple[Any, ...]]] = field(default_factory=dict)
    memberships: set[MembershipKey] = field(default_factory=set)
    details: DetailsKey | None = None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)


@dataclass
class _Lookups:
    """The gateway lookups one ``decide`` began."""

    memberships: Started[MembershipKey, bool]
    details: Started[DetailsKey, Mapping[str, Any]]

    @property
    def pending(self) -> list[Future[Any]]:
        return [*self.memberships.pending.values(), *self.details.pending.values()]

    def finish(
        self,
    ) -> tuple[dict[MembershipKey, Answer[bool]], dict[DetailsKey, Answer[Mapping[str, Any]]]]:
        return self.memberships.finish(), self.details.finish()


class FlagEngine:
    """Decides flags for visitors. Build one per process from a ``Config``; share it."""

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise TypeError("FlagEngine needs a vwo_heap_middleware.Config")
        self.config = config
        self._sender = EventSender(config.impression_queue_size)
        self.breaker = CircuitBreaker()
        self._memberships: CachedLookup[MembershipKey, bool] = CachedLookup(
            self._fetch_membership,
            executor=self._get_executor,
            breaker=self.breaker,
            ttl=lambda member: config.membership_ttl if member else config.non_membership_ttl,
            stale_ttl=config.stale_membership_ttl,
            maxsize=config.cache_size,
        )
        self._user_details: CachedLookup[DetailsKey, Mapping[str, Any]] = CachedLookup(
            self._fetch_user_details,
            executor=self._get_executor,
            breaker=self.breaker,
            ttl=lambda details: config.membership_ttl,
            stale_ttl=config.stale_membership_ttl,
            maxsize=config.cache_size,
        )
        self._index: FlagIndex | None = None
        self._sdk: Any = None
        self._pid: int | None = None
        self._closed = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.last_error: str | None = None
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Everything that must not cross a fork: locks, connections, threads, caches."""
        self._client = GatewayClient(self.config)
        self._sdk_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._decisions_lock = threading.Lock()
        self._decisions: TTLCache[tuple[Any, ...], FlagDecision] = TTLCache(
            self.config.cache_size, self.config.decision_ttl, timer=time.monotonic
        )
        self._executor = None
        self._thread = None

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading settings in the background; returns at once. Safe to call again."""
        with self._start_lock:
            if self._closed:
                raise RuntimeError("this FlagEngine is closed; build a new one")
            if self._pid == os.getpid() and self._thread is not None:
                return
            with _active_lock:
                other = _active[0]() if _active else None
                if other is not None and other is not self and not other._closed:
                    raise RuntimeError(ONE_ENGINE)
                _active[:] = [weakref.ref(self)]
            sdk_patches.install()
            sdk_patches.set_event_sink(self._sender.submit)
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._settings_loop, name="vwo-heap-settings", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop every thread the engine or the SDK started; queued events get ``timeout`` s."""
        self._closed = True
        self._stop.set()
        executor = self._executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._sender.close(timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._client.close()
        with _active_lock:
            if _active and _active[0]() is self:
                _active.clear()  # the SDK's events stay with the closed sender, which drops them

    def _ensure_process(self) -> None:
        if self._pid is not None and self._pid != os.getpid() and not self._closed:
            # Forked after start() (gunicorn --preload): rebuild what the parent's threads held.
            self._reset_process_state()
            self._memberships.reset()
            self._user_details.reset()
            self._sender.reset_after_fork()
            sdk_patches.use_event_client()  # fresh connections for the SDK's events
            self._pid = None
            self.start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until settings are loaded, at most ``timeout`` seconds; returns ``ready``."""
        self._ready.wait(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        """True once settings are loaded and the SDK can decide (in this process: a worker
        forked before its parent loaded settings starts loading them when asked)."""
        self._ensure_process()
        return self._index is not None and self._sdk is not None

    def readiness(self) -> dict[str, Any]:
        """A health-check payload: ``{"ready": bool, ...}``."""
        return {
            "ready": self.ready,
            "revision": self._index.revision if self._index else None,
            "flags": sorted(self._index.flags) if self._index else [],
            "gateway_circuit_open": self.breaker.is_open,
            "last_error": self.last_error,
            "sdk_version": sdk_patches.sdk_version(),
            "sdk_patches": sorted(name for name, on in sdk_patches.installed().items() if on),
        }

    def stats(self) -> dict[str, int]:
        return {
            "membership_calls": self._memberships.calls,
            "user_details_calls": self._user_details.calls,
            "circuit_opened": self.breaker.opened,
            "events_sent": self._sender.sent,
            "events_dropped": self._sender.dropped,
            "cached_decisions": len(self._decisions),
        }

    def flush_events(self, timeout: float = 2.0) -> bool:
        """Wait until queued SDK events are sent (tests, graceful shutdown)."""
        return self._sender.flush(timeout)

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            with self._start_lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=8, thread_name_prefix="vwo-heap-lookup"
                    )
        return self._executor

    # Settings --------------------------------------------------------------------------------

    def _settings_loop(self) -> None:
        delay = 0.25
        while not self._stop.is_set():
            try:
                self.apply_settings(self._client.fetch_settings(SETTINGS_TIMEOUT))
                self.last_error = None
                delay, wait = 0.25, self.config.settings_refresh_interval
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                wait, delay = delay, min(delay * 2, MAX_RETRY_DELAY)
                logger.warning(SETTINGS_FAILED, self.last_error, wait)
            self._stop.wait(wait)

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Use these VWO settings from now on (the background loop calls this)."""
        from wingify.services.settings_manager import SettingsManager

        index = FlagIndex.from_settings(settings)
        if self._index is not None and index.revision == self._index.revision:
            return
        if not SettingsManager.is_settings_valid(settings):
            raise GatewayError("the settings fail the VWO SDK's settings schema")
        with self._sdk_lock:
            if self._sdk is None:
                client = sdk_patches.init_client(self._sdk_options(), settings)
                if client is None or getattr(client, "_settings", None) is None:
                    raise GatewayError("the VWO SDK did not accept the settings")
                self._sdk = client
            else:
                self._sdk.update_settings(settings)  # logs and returns on failure: check it took
                if self._sdk.original_settings is not settings:
                    raise GatewayError("the VWO SDK did not accept the new settings")
            self._index = index
        self._ready.set()
        with self._decisions_lock:
            self._decisions.clear()
        logger.info(SETTINGS_LOADED, index.revision, len(index.flags))

    def _sdk_options(self) -> dict[str, Any]:
        level = self.config.sdk_log_level
        return {
            "account_id": self.config.account_id,
            "sdk_key": self.config.sdk_key,
            "gateway_service": {"url": self.config.gateway_url},
            "logger": {
                "level": (level or "ERROR").upper(),
                "transport": sdk_patches.LogTransport(level),
            },
        }

    # Decisions -------------------------------------------------------------------------------

    def decide(
        self, visitor: Visitor, keys: Iterable[str], *, timeout: float | None = None
    ) -> dict[str, FlagDecision]:
        """Decide ``keys`` for ``visitor``, waiting at most ``timeout`` (default: the budget).

        Never raises: an unexpected failure gives each flag its default, reason ``error``.
        """
        keys = list(keys)
        try:
            return self._decide(visitor, keys, timeout)
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._defaults(keys, Reason.ERROR)

    def _decide(
        self, visitor: Visitor, keys: list[str], timeout: float | None
    ) -> dict[str, FlagDecision]:
        plan, lookups, deadline = self._prepare(visitor, keys, timeout)
        if lookups is not None:
            pending = lookups.pending
            if pending:
                concurrent.futures.wait(pending, timeout=deadline.remaining())
            self._evaluate(plan, visitor, *lookups.finish())
        return plan.results

    async def decide_async(
        self, visitor: Visitor, keys: Iterable[str], *, timeout: float | None = None
    ) -> dict[str, FlagDecision]:
        """``decide`` for async code: gateway lookups run concurrently, off the event loop."""
        keys = list(keys)
        try:
            plan, lookups, deadline = self._prepare(visitor, keys, timeout)
            if lookups is not None:
                if lookups.pending:
                    waiters = [asyncio.wrap_future(f) for f in lookups.pending]
                    await asyncio.wait(waiters, timeout=deadline.remaining())
                    for waiter in waiters:
                        waiter.cancel()  # only the asyncio view: the shared lookup goes on
                self._evaluate(plan, visitor, *lookups.finish())
            return plan.results
        except Exception:
            logger.exception(ENGINE_FAILED)
            return self._defaults(keys, Reason.ERROR)

    def _prepare(
        self, visitor: Visitor, keys: list[str], timeout: float | None
    ) -> tuple[_Plan, _Lookups | None, _Deadline]:
        """Answer what the caches know; start the gateway lookups the rest needs."""
        deadline = _Deadline(timeout if timeout is not None else self.config.evaluation_timeout)
        plan = self._plan(visitor, keys)
        return plan, (self._begin_lookups(plan) if plan.todo else None), deadline

    def _begin_lookups(self, plan: _Plan) -> _Lookups:
        return _Lookups(
            self._memberships.begin(plan.memberships),
            self._user_details.begin([plan.details] if plan.details else []),
        )

    def _plan(self, visitor: Visitor, keys: Iterable[str]) -> _Plan:
        self._ensure_process()
        if self._pid is None and not self._closed:
            self.start()
        plan = _Plan()
        index, context = self._index, visitor.context
        if index is None or self._sdk is None or self._closed:
            reason = Reason.NOT_READY
        elif context is None:
            reason = Reason.NO_USER
        else:
            custom = context["custom_variables"]
            facts = (context.get("user_agent"), context.get("ip_address"))
            base = (index.revision, visitor.user_id, tuple(sorted(custom.items())))
            decisions = self._decisions
            with self._decisions_lock:
                for key in keys:
                    needs = index.flags.get(key)
                    if needs is None:
                        plan.results[key] = FlagDecision.default(
                            key, Reason.UNKNOWN_FLAG, self.config.default_for(key)
                        )
                        continue
                    cache_key = (key, *base, facts if needs.request_facts else None)
                    try:
                        plan.results[key] = decisions[cache_key]
                    except KeyError:
                        plan.todo[key] = (needs, cache_key)
            for needs, _ in plan.todo.values():
                for name, list_id in needs.lists:
                    if name in custom:
                        plan.memberships.add((list_id, str(custom[name])))
                if needs.user_details and any(facts):
                    plan.details = facts
            return plan
        plan.results = self._defaults(keys, reason)
        return plan

    def _defaults(self, keys: Iterable[str], reason: Reason) -> dict[str, FlagDecision]:
        return {
            key: FlagDecision.default(key, reason, self.config.default_for(key)) for key in keys
        }

    def _evaluate(
        self,
        plan: _Plan,
        visitor: Visitor,
        memberships: dict[MembershipKey, Answer[bool]],
        details: dict[DetailsKey, Answer[Mapping[str, Any]]],
    ) -> None:
        detail = details.get(plan.details) if plan.details else None
        call_memberships = {key: a.value if a.known else None for key, a in memberships.items()}
        answers: list[Answer[Any]] = [*memberships.values(), *([detail] if detail else [])]
        fresh = all(a.status == "fresh" for a in answers)
        timed_out = any(a.status == "timeout" for a in answers)
        for key, (needs, cache_key) in plan.todo.items():
            call = sdk_patches.SdkCall(call_memberships)
            context = dict(visitor.context or {})
            if needs.user_details and detail is not None and detail.known:
                call.user_details = detail.value
                context["_vwo"] = detail.value
            else:  # keeps the SDK from asking the gateway itself
                context["_vwo"] = sdk_patches.EMPTY_USER_DETAILS
                call.missing = needs.user_details and detail is not None
            decision = self._call_sdk(key, context, call, visitor)
            if decision.reason is Reason.NOT_TARGETED and call.missing:
                reason = Reason.TIMEOUT if timed_out else Reason.GATEWAY_ERROR
                decision = FlagDecision.default(key, reason, self.config.default_for(key))
            elif fresh and not call.missing and decision.reason is not Reason.ERROR:
                with self._decisions_lock:
                    self._decisions[cache_key] = decision
            plan.results[key] = decision

    def _call_sdk(
        self, key: str, context: dict[str, Any], call: sdk_patches.SdkCall, visitor: Visitor
    ) -> FlagDecision:
        token = sdk_patches.current_call.set(call)
        try:
            with self._sdk_lock:
                flag = self._sdk.get_flag(key, context)
            enabled = bool(flag.is_enabled())
            variables = {v["key"]: v["value"] for v in flag.get_variables() or []}
        except Exception:
            logger.exception(SDK_FAILED, key, short_hash(visitor.user_id or ""))
            return FlagDecision.default(key, Reason.ERROR, self.config.default_for(key))
        finally:
            sdk_patches.current_call.reset(token)
        reason = Reason.TARGETED if enabled else Reason.NOT_TARGETED
        return FlagDecision(key, enabled, MappingProxyType(variables), reason)

    # Gateway lookups -------------------------------------------------------------------------

    def _fetch_membership(self, key: MembershipKey) -> bool:
        return self._client.is_member(*key)

    def _fetch_user_details(self, key: DetailsKey) -> Mapping[str, Any]:
        details = self._client.user_details(*key)
        return MappingProxyType(
            {"location": details.get("location") or {}, "userAgent": details.get("userAgent") or {}}
        )
