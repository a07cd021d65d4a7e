"""Gateway lookups the engine owns: cached, shared between concurrent requests, fail-fast.

A ``CachedLookup`` answers ``key -> value`` (a segment membership, a visitor's user details):

- fresh answers come from a TTL cache (cachetools), with a TTL per answer (members and
  non-members can differ); each answer says when it expires, so a decision made on it can
  live exactly as long;
- concurrent requests for one key share one gateway call (single flight);
- a ``CircuitBreaker`` stops calling a failing gateway for a while; meanwhile answers come from
  a longer-lived stale cache, or not at all, without waiting;
- calls run on a small thread pool, or, for async requests when the lookup has an async fetch
  (memberships from a plain-HTTP gateway), on the event loop itself: no thread hand-off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import functools
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cachetools import TLRUCache, TTLCache

from .circuit_breaker import CircuitBreaker
from .config import Config
from .gateway_client import Gateway, GatewayClient, LoopMemberships
from .observers import Observer

if TYPE_CHECKING:
    from .redis_store import RedisStore

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MembershipKey = tuple[str, str]  # (attribute list id, attribute value)
DetailsKey = tuple[str | None, str | None]  # (user agent, ip address)


class AnswerStatus(str, enum.Enum):
    FRESH = "fresh"  # from the gateway, within its TTL
    STALE = "stale"  # the gateway failed; an older answer stands in
    FAILED = "failed"  # the gateway failed (or the circuit is open) and nothing older is kept
    TIMEOUT = "timeout"  # the call was still running when the request's budget ran out


@dataclass(frozen=True, slots=True)
class Answer(Generic[V]):
    """A lookup's answer: a value when ``known`` (fresh or stale), else why there is none."""

    value: V | None
    status: AnswerStatus
    expires: float = math.inf  # a fresh answer: when (``time.monotonic()``) it stops being one

    @property
    def known(self) -> bool:
        return self.status in (AnswerStatus.FRESH, AnswerStatus.STALE)


Landed = tuple[V, float] | None
"""What a flight lands with: the value and when it expires, or None when the gateway failed.
Flights never hold an exception and nobody cancels them: many requests may be waiting on one."""


@dataclass
class Started(Generic[K, V]):
    """The lookups one request began: wait on ``pending``, then ``finish()``."""

    lookup: CachedLookup[K, V]
    answers: dict[K, Answer[V]] = field(default_factory=dict)
    pending: dict[K, Any] = field(default_factory=dict)  # key -> its flight (either kind)

    def finish(self) -> dict[K, Answer[V]]:
        """Every key's answer: a flight still under way counts as ``timeout``."""
        for key, flight in self.pending.items():
            landed = flight.result() if flight.done() and not flight.cancelled() else None
            if landed is not None:
                self.answers[key] = Answer(landed[0], AnswerStatus.FRESH, landed[1])
            else:
                status = AnswerStatus.TIMEOUT if not flight.done() else AnswerStatus.FAILED
                self.answers[key] = self.lookup.fallback(key, status)
        return self.answers


class CachedLookup(Generic[K, V]):
    def __init__(
        self,
        fetch: Callable[[K], V],
        *,
        executor: Callable[[], concurrent.futures.Executor],
        breaker: CircuitBreaker,
        ttl: Callable[[V], float],
        stale_ttl: float,
        maxsize: int,
        clock: Callable[[], float] = time.monotonic,
        shared: Callable[[list[K]], Mapping[K, V]] | None = None,
        fetch_on_loop: Callable[[K], Awaitable[V]] | None = None,
    ) -> None:
        self._clock = clock
        self._fetch = fetch
        self.fetch_on_loop = fetch_on_loop  # None: always on the thread pool
        self._shared = shared  # answers other processes have (Redis), asked before the gateway
        self._executor = executor
        self.breaker = breaker
        self._ttl = ttl
        self._stale_ttl = stale_ttl
        self._maxsize = maxsize
        self.calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything (after a fork: a lock or cache may have been mid-change)."""
        self._lock = threading.Lock()
        self._fresh: TLRUCache[K, tuple[V, float]] = TLRUCache(  # (value, expires)
            self._maxsize, ttu=lambda key, entry, now: entry[1], timer=self._clock
        )
        self._stale: TTLCache[K, V] = TTLCache(self._maxsize, self._stale_ttl, timer=self._clock)
        self._in_flight: dict[K, concurrent.futures.Future[Landed[V]]] = {}
        # Flights on event loops: each loop's own, touched only from that loop's thread.
        self._on_loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[K, asyncio.Future[Landed[V]]]
        ] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Future[None]] = set()

    def in_flight(self) -> int:
        """Flights under way (thread pool and event loops); 0 once every lookup landed."""
        return len(self._in_flight) + sum(len(f) for f in list(self._on_loops.values()))

    def begin(self, keys: Iterable[K], *, on_loop: bool = False) -> Started[K, V]:
        """Answer what the cache knows; start (or join) gateway calls for the rest: on the
        running event loop when ``on_loop`` and there is an async fetch."""
        started: Started[K, V] = Started(self)
        flights: Mapping[K, Any] = self._in_flight
        if on_loop and self.fetch_on_loop is not None:
            loop = asyncio.get_running_loop()
            flights = self._on_loops.get(loop) or self._on_loops.setdefault(loop, {})
        missing: list[K] = []
        for key in keys:
            with self._lock:
                entry = self._fresh.get(key)
            if entry is not None:
                started.answers[key] = Answer(entry[0], AnswerStatus.FRESH, entry[1])
                continue
            flight = flights.get(key) or self._in_flight.get(key)  # a thread's too
            if flight is not None and not flight.done():  # a landed flight is never joined
                started.pending[key] = flight
            else:
                missing.append(key)
        if missing and self._shared is not None:
            for key, value in self._shared(missing).items():
                expires = self._keep(key, value)
                started.answers[key] = Answer(value, AnswerStatus.FRESH, expires)
        for key in missing:
            if key in started.answers:
                continue
            if not self.breaker.allow():
                started.answers[key] = self.fallback(key, AnswerStatus.FAILED)
            elif flights is self._in_flight:
                started.pending[key] = self._start(key)
            else:
                started.pending[key] = self._start_on_loop(key, flights)  # type: ignore[arg-type]
        return started

    def _start_on_loop(
        self, key: K, flights: dict[K, asyncio.Future[Landed[V]]]
    ) -> asyncio.Future[Landed[V]]:
        flight = flights[key] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._call_on_loop(key, flight, flights))
        self._tasks.add(task)  # a task nothing refers to may be collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return flight

    async def _call_on_loop(
        self,
        key: K,
        flight: asyncio.Future[Landed[V]],
        flights: dict[K, asyncio.Future[Landed[V]]],
    ) -> None:
        assert self.fetch_on_loop is not None
        self.calls += 1
        landed: Landed[V] = None
        try:
            value = await self.fetch_on_loop(key)
        except asyncio.CancelledError:  # the loop shutting down: never left in flight
            raise
        except Exception as error:
            if getattr(error, "gateway_fault", True):  # a 4xx about one value is not an outage
                self.breaker.failure()
        else:
            self.breaker.success()
            landed = (value, self._keep(key, value))
        finally:
            if flights.get(key) is flight:
                del flights[key]
            if not flight.done():
                flight.set_result(landed)

    def _keep(self, key: K, value: V) -> float:
        """Cache a fresh answer; returns when it expires."""
        expires = self._clock() + self._ttl(value)
        with self._lock:
            self._fresh[key] = (value, expires)
            self._stale[key] = value
        return expires

    def _start(self, key: K) -> concurrent.futures.Future[Landed[V]]:
        with self._lock:
            flight = self._in_flight.get(key)
            if flight is not None and not flight.done():
                return flight
            try:
                flight = self._executor().submit(self._call, key)
            except RuntimeError:  # executor shut down (engine closing)
                flight = concurrent.futures.Future()
                flight.set_result(None)
                return flight
            self._in_flight[key] = flight
        # Outside the lock: a flight that already landed runs the callback at once.
        flight.add_done_callback(functools.partial(self._landed, key))
        return flight

    def _landed(self, key: K, flight: concurrent.futures.Future[Landed[V]]) -> None:
        """A pool flight is over (landed, or cancelled while queued: engine closing)."""
        with self._lock:
            if self._in_flight.get(key) is flight:
                del self._in_flight[key]

    def _call(self, key: K) -> Landed[V]:
        self.calls += 1
        try:
            value = self._fetch(key)
        except Exception as error:
            if getattr(error, "gateway_fault", True):  # a 4xx about one value is not an outage
                self.breaker.failure()
            return None
        self.breaker.success()
        return value, self._keep(key, value)

    def fallback(self, key: K, status: AnswerStatus) -> Answer[V]:
        """The stale answer for ``key`` if there is one, else no value with ``status``."""
        with self._lock:
            try:
                return Answer(self._stale[key], AnswerStatus.STALE)
            except KeyError:
                return Answer(None, status)


async def wait_async(flights: Iterable[Any], timeout: float) -> None:
    """Wait until every flight landed or ``timeout`` passed, from a coroutine. Nothing is
    cancelled: a pool flight is watched through a future of this loop's own."""
    loop = asyncio.get_running_loop()
    waiting = []
    for flight in flights:
        if flight.done():
            continue
        if isinstance(flight, asyncio.Future):
            waiting.append(flight)
        else:
            watcher = loop.create_future()
            flight.add_done_callback(functools.partial(_wake, loop, watcher))
            waiting.append(watcher)
    if waiting:
        await asyncio.wait(waiting, timeout=timeout)


def _wake(loop: asyncio.AbstractEventLoop, watcher: asyncio.Future[None], _: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_set_once, watcher)


def _set_once(watcher: asyncio.Future[None]) -> None:
    if not watcher.done():
        watcher.set_result(None)


@dataclass
class Pending:
    """The gateway lookups one decision began: wait on ``futures``, then ``finish()``."""

    memberships: Started[MembershipKey, bool]
    details: Started[DetailsKey, Mapping[str, Any]]

    @property
    def flights(self) -> list[Any]:
        return [*self.memberships.pending.values(), *self.details.pending.values()]

    def wait(self, timeout: float) -> None:
        """Wait (blocking) until every flight landed, at most ``timeout`` seconds."""
        if self.memberships.pending or self.details.pending:
            concurrent.futures.wait(self.flights, timeout=timeout)

    async def wait_async(self, timeout: float) -> None:
        """``wait`` from a coroutine, without blocking the loop or cancelling any flight."""
        if self.memberships.pending or self.details.pending:
            await wait_async(self.flights, timeout)

    def finish(
        self,
    ) -> tuple[dict[MembershipKey, Answer[bool]], dict[DetailsKey, Answer[Mapping[str, Any]]]]:
        return self.memberships.finish(), self.details.finish()


class GatewayLookups:
    """Segment memberships and user details for the engine, on a small thread pool."""

    def __init__(self, config: Config, client: Gateway) -> None:
        self._config = config
        self.client = client
        self.observers: Observer = Observer()
        self.breaker = CircuitBreaker()
        self.shared: RedisStore | None = None
        if config.redis_url is not None:
            from .redis_store import RedisStore  # the [redis] extra, only when asked for

            self.shared = RedisStore(config)
        self.memberships: CachedLookup[MembershipKey, bool] = CachedLookup(
            self._fetch_membership,
            executor=self._get_executor,
            breaker=self.breaker,
            ttl=lambda member: config.membership_ttl if member else config.non_membership_ttl,
            stale_ttl=config.stale_membership_ttl,
            maxsize=config.cache_size,
            shared=lambda keys: self.shared.answers("m", keys) if self.shared else {},
        )
        self.user_details: CachedLookup[DetailsKey, Mapping[str, Any]] = CachedLookup(
            self._fetch_user_details,
            executor=self._get_executor,
            breaker=self.breaker,
            ttl=lambda details: config.user_details_ttl,
            stale_ttl=config.stale_membership_ttl,
            maxsize=config.cache_size,
            shared=lambda keys: self.shared.answers("u", keys) if self.shared else {},
        )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._on_loop: LoopMemberships | None = None
        self._set_on_loop(client)

    def _set_on_loop(self, client: Gateway) -> None:
        """Async requests ask the real gateway for memberships from the event loop, unless
        Redis coordinates the asking (its calls block) or the gateway is HTTPS."""
        if self._on_loop is not None:
            self._on_loop.close()
        on_loop = LoopMemberships(self._config)
        usable = isinstance(client, GatewayClient) and on_loop.usable and self.shared is None
        self._on_loop = on_loop if usable else None
        self.memberships.fetch_on_loop = self._fetch_membership_on_loop if usable else None

    async def _fetch_membership_on_loop(self, key: MembershipKey) -> bool:
        assert self._on_loop is not None
        with self._timing("membership"):
            return await self._on_loop.is_member(*key)

    def reset(self, client: Gateway) -> None:
        """After a fork: forget the parent's caches, threads, connections and breaker."""
        self.client = client
        self._set_on_loop(client)
        self.breaker = self.memberships.breaker = self.user_details.breaker = CircuitBreaker()
        self._executor = None
        self._lock = threading.Lock()
        self.memberships.reset()
        self.user_details.reset()

    def stats(self) -> dict[str, int]:
        return {
            "membership_calls": self.memberships.calls,
            "user_details_calls": self.user_details.calls,
            "lookups_in_flight": self.memberships.in_flight() + self.user_details.in_flight(),
            "circuit_opened": self.breaker.opened,
            "circuit_open": int(self.breaker.is_open),
        }

    def begin(
        self,
        memberships: Iterable[MembershipKey],
        details: DetailsKey | None,
        on_loop: bool = False,
    ) -> Pending:
        """Start the lookups a decision needs; ``on_loop``: the caller is a coroutine on the
        running event loop, so memberships may be asked from it."""
        return Pending(
            self.memberships.begin(memberships, on_loop=on_loop),
            self.user_details.begin([details] if details else []),
        )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._on_loop is not None:
            self._on_loop.close()

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=8, thread_name_prefix="vwo-heap-lookup"
                    )
        return self._executor

    def timed(self, kind: str, call: Callable[..., V], *args: Any) -> V:
        """``call(*args)``, with its duration and outcome told to the observers."""
        with self._timing(kind):
            return call(*args)

    @contextlib.contextmanager
    def _timing(self, kind: str) -> Iterator[None]:
        """Tells the observers how long the block took, and whether it failed."""
        started = time.perf_counter()
        failed = True
        try:
            yield
            failed = False
        finally:
            self.observers.lookup_done(kind, time.perf_counter() - started, failed)

    def _fetch_membership(self, key: MembershipKey) -> bool:
        def ask() -> bool:
            return self.timed("membership", self.client.is_member, *key)

        def ttl(member: bool) -> float:
            return self._config.membership_ttl if member else self._config.non_membership_ttl

        if self.shared is None:
            return ask()
        return self.shared.fetch_once("m", key, ask, ttl)

    def _fetch_user_details(self, key: DetailsKey) -> Mapping[str, Any]:
        def ask() -> dict[str, Any]:
            details = self.timed("user_details", self.client.user_details, *key)
            return {
                "location": details.get("location") or {},
                "userAgent": details.get("userAgent") or {},
            }

        if self.shared is None:
            return MappingProxyType(ask())
        ttl = self._config.user_details_ttl
        return MappingProxyType(self.shared.fetch_once("u", key, ask, lambda details: ttl))
