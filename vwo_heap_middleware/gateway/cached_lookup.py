"""``CachedLookup``: answers ``key -> value`` from the gateway (a segment membership, a
visitor's user details), cached, shared between concurrent requests, and failing fast.

- fresh answers come from a cache of atoms (``ExpiringMap``), with a TTL per answer (members and
  non-members can differ); each answer says when it expires, so a decision made on it can live
  exactly as long;
- concurrent requests for one key share one gateway call, its *flight*: on the thread pool, or
  on the running event loop when there is an async fetch. A flight lands with a value or nothing,
  holds no exception, and nobody cancels it: a waiter that gives up only stops waiting;
- a ``CircuitBreaker`` stops calling a failing gateway for a while; meanwhile answers come from
  a longer-lived stale cache, or not at all, without waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..evaluation.caches import ExpiringMap
from ..evaluation.outcome import Answer, AnswerStatus
from .breaker import CircuitBreaker

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Landed = tuple[V, float] | None
"""What a flight lands with: the value and when it expires, or None when the gateway failed.
Flights never hold an exception and nobody cancels them: many requests may be waiting on one."""


@dataclass
class Started(Generic[K, V]):
    """The lookups one request began: wait on ``pending``, then ``finish()``."""

    lookup: CachedLookup[K, V]
    answers: dict[K, Answer[V]] = field(default_factory=dict)
    pending: dict[K, Any] = field(default_factory=dict)  # key -> its flight (either kind)
    deferred: K | None = None  # a flight of ours the caller runs itself (``run_deferred``)

    def run_deferred(self) -> None:
        """Run the deferred flight in this thread: a blocking caller's one lookup, with no
        hand-off to the pool (others may have joined it meanwhile: it lands for them too)."""
        if self.deferred is not None:
            key, self.deferred = self.deferred, None
            self.lookup.run(key, self.pending[key])

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


@dataclass(frozen=True)
class SharedAnswer(Generic[V]):
    """An answer another process kept (Redis), and for how many more seconds it is fresh (0
    or less: stale, ours only if the gateway fails)."""

    value: V
    fresh_for: float


class CachedLookup(Generic[K, V]):
    """One kind of gateway answer (``fetch(key) -> value``): fresh and stale caches, one
    flight per key, on ``executor`` or (``fetch_on_loop``) on the running event loop, Redis
    (``shared``) asked before the gateway, ``breaker`` keeping calls off a failing gateway."""

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
        shared: Callable[[list[K]], Mapping[K, SharedAnswer[V]]] | None = None,
        fetch_on_loop: Callable[[K], asyncio.Future[V]] | None = None,
        atom: Callable[[K], Hashable] = repr,
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
        self._atom = atom  # the caches' key: an atom (a string), not a tuple the GC would walk
        self.calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything (after a fork: a lock or cache may have been mid-change)."""
        self._lock = threading.Lock()
        self._fresh: ExpiringMap[Hashable, V] = ExpiringMap(self._maxsize)
        self._stale: ExpiringMap[Hashable, V] = ExpiringMap(self._maxsize)  # for faults
        self._in_flight: dict[K, concurrent.futures.Future[Landed[V]]] = {}
        # Flights on event loops: each loop's own, touched only from that loop's thread.
        self._on_loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[K, asyncio.Future[Landed[V]]]
        ] = weakref.WeakKeyDictionary()

    def in_flight(self) -> int:
        """Flights under way (thread pool and running event loops); 0 once every lookup
        landed. A loop that closed with flights under way took them with it."""
        on_loops = list(self._on_loops.items())
        return len(self._in_flight) + sum(len(f) for loop, f in on_loops if not loop.is_closed())

    def _flights_on(self, loop: asyncio.AbstractEventLoop) -> dict[K, asyncio.Future[Landed[V]]]:
        """``loop``'s flights; a new loop first forgets closed ones (their futures hold their
        loop, so the weak keys alone would never let them go)."""
        flights = self._on_loops.get(loop)
        if flights is None:
            for old in [old for old in list(self._on_loops) if old.is_closed()]:
                self._on_loops.pop(old, None)
            flights = self._on_loops.setdefault(loop, {})
        return flights

    def begin(
        self, keys: Iterable[K], *, on_loop: bool = False, defer: bool = False
    ) -> Started[K, V]:
        """Answer what the cache knows; start (or join) gateway calls for the rest: on the
        running event loop when ``on_loop`` and there is an async fetch. ``defer``: one new
        flight is left for the caller to run (``Started.run_deferred``), the rest go to the
        pool."""
        started: Started[K, V] = Started(self)
        flights: Mapping[K, Any] = self._in_flight
        if on_loop and self.fetch_on_loop is not None:
            flights = self._flights_on(asyncio.get_running_loop())
        missing: list[K] = []
        now = self._clock()
        for key in keys:
            entry = self._fresh.get(self._atom(key), now)
            if entry is not None:
                started.answers[key] = Answer(entry[0], AnswerStatus.FRESH, entry[1])
                continue
            flight = flights.get(key) or self._in_flight.get(key)  # a thread's too
            if flight is not None:  # one that just landed answers at once: its answer is fresh
                started.pending[key] = flight
            else:
                missing.append(key)
        if missing and self._shared is not None and flights is self._in_flight:
            for key, kept in self._shared(missing).items():
                if kept.fresh_for > 0:
                    expires = self._keep(key, kept.value, kept.fresh_for)
                    started.answers[key] = Answer(kept.value, AnswerStatus.FRESH, expires)
                else:  # another worker's answer, stale: ours if the gateway fails
                    self._stale.put(self._atom(key), kept.value, now + self._stale_ttl)
        for key in missing:
            if key in started.answers:
                continue
            landed = self._landed_since(key)
            if landed is not None:
                started.answers[key] = landed
            elif not self.breaker.allow():
                started.answers[key] = self.fallback(key, AnswerStatus.FAILED)
            elif flights is self._in_flight and defer and started.deferred is None:
                flight, ours = self._register(key)
                started.pending[key] = flight
                if ours:
                    started.deferred = key
            elif flights is self._in_flight:
                started.pending[key] = self._start(key)
            else:
                started.pending[key] = self._start_on_loop(key, flights)  # type: ignore[arg-type]
        return started

    def _start_on_loop(
        self, key: K, flights: dict[K, asyncio.Future[Landed[V]]]
    ) -> asyncio.Future[Landed[V]]:
        assert self.fetch_on_loop is not None
        flight = flights[key] = asyncio.get_running_loop().create_future()
        self.calls += 1
        self.fetch_on_loop(key).add_done_callback(
            functools.partial(self._answered, key, flight, flights)
        )
        return flight

    def _answered(
        self,
        key: K,
        flight: asyncio.Future[Landed[V]],
        flights: dict[K, asyncio.Future[Landed[V]]],
        answer: asyncio.Future[V],
    ) -> None:
        """An on-loop fetch is over: land its flight (cancelled: the loop is ending)."""
        landed: Landed[V] = None
        if answer.cancelled():
            self.breaker.release()  # the loop is ending: the call told nothing
        else:
            error = answer.exception()
            if error is None:
                self.breaker.success()
                value = answer.result()
                landed = (value, self._keep(key, value))
            else:
                self._failed(key, error)
        if flights.get(key) is flight:
            del flights[key]
        if not flight.done():
            flight.set_result(landed)

    def _failed(self, key: K, error: BaseException) -> None:
        """A fetch failed: an outage (not a 4xx about one value) counts against the breaker;
        a stale answer it found elsewhere (Redis: ``error.stale``) is kept for the fallback."""
        if getattr(error, "gateway_fault", True):
            self.breaker.failure()
        stale = getattr(error, "stale", None)
        if stale is not None:
            self._stale.put(self._atom(key), stale, self._clock() + self._stale_ttl)

    def put(self, key: K, value: V) -> float:
        """Cache an answer known without asking (one just told to the gateway); its expiry."""
        return self._keep(key, value)

    def _keep(self, key: K, value: V, fresh_for: float | None = None) -> float:
        """Cache a fresh answer (for ``fresh_for`` s, else its TTL); returns when it expires."""
        now = self._clock()
        expires = now + (self._ttl(value) if fresh_for is None else fresh_for)
        atom = self._atom(key)
        self._fresh.put(atom, value, expires)
        self._stale.put(atom, value, now + self._stale_ttl)
        return expires

    def _landed_since(self, key: K) -> Answer[V] | None:
        """The fresh answer a flight stored after ``begin`` first missed the cache: a flight
        keeps its answer before it lands and leaves ``_in_flight`` only after, so a key with
        no flight under way is either cached by now or truly missing."""
        entry = self._fresh.get(self._atom(key), self._clock())
        return None if entry is None else Answer(entry[0], AnswerStatus.FRESH, entry[1])

    def _start(self, key: K) -> concurrent.futures.Future[Landed[V]]:
        """A pool flight for ``key``, or the one that began (or landed) since ``begin`` looked:
        then no call of ours is made, and a probe the breaker let through goes back."""
        started = None
        with self._lock:
            flight = self._in_flight.get(key)
            cached = None if flight is not None else self._fresh.get(self._atom(key), self._clock())
            if flight is None and cached is None:
                try:
                    flight = started = self._executor().submit(self._call, key)
                except RuntimeError:  # executor shut down (engine closing)
                    pass
                else:
                    self._in_flight[key] = started
        if started is None:  # joined, answered meanwhile, or no pool: no call of ours
            self.breaker.release()
            if flight is None:
                flight = concurrent.futures.Future()
                flight.set_result(cached)  # (value, expires), or None: nothing
            return flight
        # Outside the lock: a flight that already landed runs the callback at once.
        started.add_done_callback(functools.partial(self._landed, key))
        return started

    def _register(self, key: K) -> tuple[concurrent.futures.Future[Landed[V]], bool]:
        """A flight for ``key`` that others may join, not started: ``run`` it. False: one
        was under way, or just landed (joined instead; a probe the breaker let through goes
        back)."""
        ours = False
        with self._lock:
            flight = self._in_flight.get(key)
            if flight is None:
                cached = self._fresh.get(self._atom(key), self._clock())
                flight = concurrent.futures.Future()
                if cached is not None:  # another thread's flight landed since ``begin`` looked
                    flight.set_result(cached)
                else:
                    self._in_flight[key] = flight
                    ours = True
        if not ours:
            self.breaker.release()
            return flight, False
        flight.add_done_callback(functools.partial(self._landed, key))
        return flight, True

    def run(self, key: K, flight: concurrent.futures.Future[Landed[V]]) -> None:
        """Run a ``_register``-ed flight here; it always lands (None if the call raised)."""
        landed: Landed[V] = None
        try:
            landed = self._call(key)
        finally:
            flight.set_result(landed)

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
            self._failed(key, error)
            return None
        self.breaker.success()
        return value, self._keep(key, value)

    def fallback(self, key: K, status: AnswerStatus) -> Answer[V]:
        """The stale answer for ``key`` if there is one, else no value with ``status``."""
        entry = self._stale.get(self._atom(key), self._clock())
        return Answer(None, status) if entry is None else Answer(entry[0], AnswerStatus.STALE)


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
