"""The gateway lookups an engine makes: segment memberships, user details and (with aliasing)
the user id an id is an alias of, each a ``CachedLookup``, on a small thread pool, from the
event loop where they can be, and through Redis first when it is configured (``redis_store``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import Config
from ..evaluation.outcome import Answer, DetailsKey, MembershipKey
from ..observers import Observer
from .aliases import AliasLinks
from .breaker import CircuitBreaker
from .cached_lookup import CachedLookup, Started, wait_async
from .client import Gateway, GatewayClient
from .loop import LoopGateway

if TYPE_CHECKING:
    from .redis_store import RedisStore

V = TypeVar("V")


@dataclass
class Pending:
    """The gateway lookups one decision began: ``wait`` (or ``wait_async``), then ``finish()``."""

    memberships: Started[MembershipKey, bool]
    details: Started[DetailsKey, Mapping[str, Any]]
    alias: Started[str, str] | None = None  # the visitor's id, when its alias is under way

    @property
    def flights(self) -> list[Any]:
        flights = [*self.memberships.pending.values(), *self.details.pending.values()]
        return flights + list(self.alias.pending.values()) if self.alias else flights

    def wait(self, timeout: float) -> None:
        """Wait (blocking) until every flight landed, at most ``timeout`` seconds."""
        flights = self.flights
        if any(not flight.done() for flight in flights):
            concurrent.futures.wait(flights, timeout=timeout)

    async def wait_async(self, timeout: float) -> None:
        """``wait`` from a coroutine, without blocking the loop or cancelling any flight."""
        if flights := self.flights:
            await wait_async(flights, timeout)

    def finish(
        self,
    ) -> tuple[dict[MembershipKey, Answer[bool]], dict[DetailsKey, Answer[Mapping[str, Any]]]]:
        return self.memberships.finish(), self.details.finish()


class GatewayLookups:
    """Segment memberships, user details and aliases for the engine: cached, single-flight, on
    a small thread pool or on the event loop, Redis (``shared``) asked before the gateway."""

    def __init__(
        self,
        config: Config,
        client: Gateway,
        *,
        shared: RedisStore | None = None,
        observers: Observer | None = None,
    ) -> None:
        self._config = config
        self.client = client
        self.shared = shared  # answers every worker and host has (Redis)
        self.observers = observers if observers is not None else Observer()
        self.breaker = CircuitBreaker()
        self.memberships: CachedLookup[MembershipKey, bool] = CachedLookup(
            self._fetch_membership,
            executor=self.executor,
            breaker=self.breaker,
            ttl=lambda member: config.membership_ttl if member else config.non_membership_ttl,
            stale_ttl=config.stale_membership_ttl,
            maxsize=config.cache_size,
            shared=(lambda keys: shared.answers("m", keys)) if shared else None,
            atom=_membership_atom,
        )
        self.user_details: CachedLookup[DetailsKey, Mapping[str, Any]] = CachedLookup(
            self._fetch_user_details,
            executor=self.executor,
            breaker=self.breaker,
            ttl=lambda details: config.user_details_ttl,
            stale_ttl=config.stale_membership_ttl,
            maxsize=config.cache_size,
            shared=(lambda keys: shared.answers("u", keys)) if shared else None,
        )
        # the id each user id is an alias of (itself: none), kept as long as a non-membership
        self.aliases: CachedLookup[str, str] | None = None
        if config.aliasing:
            self.aliases = CachedLookup(
                self._fetch_alias,
                executor=self.executor,
                breaker=self.breaker,
                ttl=self._alias_ttl,
                stale_ttl=config.stale_membership_ttl,
                maxsize=config.cache_size,
                shared=(lambda keys: shared.answers("a", keys)) if shared else None,
                atom=str,
            )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._on_loop: LoopGateway | None = None
        self._set_on_loop(client)
        self.links = AliasLinks(
            config, self.aliases, self.executor, self.timed, lambda: self.client, shared
        )

    def _set_on_loop(self, client: Gateway) -> None:
        """Async requests ask the real gateway (HTTP or HTTPS) from their event loop, Redis
        with its asyncio client; the thread pool is left to blocking callers."""
        if self._on_loop is not None:
            self._on_loop.close()
        on_loop = LoopGateway(self._config) if isinstance(client, GatewayClient) else None
        self._on_loop = on_loop if on_loop is not None and on_loop.usable else None
        usable = self._on_loop is not None
        self.memberships.fetch_on_loop = self._membership_on_loop if usable else None
        self.user_details.fetch_on_loop = self._details_on_loop if usable else None
        if self.aliases is not None:
            self.aliases.fetch_on_loop = self._alias_on_loop if usable else None

    def _membership_on_loop(self, key: MembershipKey) -> asyncio.Future[bool]:
        on_loop = self._on_loop
        assert on_loop is not None

        def ask() -> asyncio.Future[bool]:
            return self._timed_on_loop("membership", on_loop.is_member(*key))

        if self.shared is not None:
            return asyncio.ensure_future(self.shared.fetch_once_async("m", key, ask, self._ttl))
        return ask()

    def _alias_on_loop(self, user_id: str) -> asyncio.Future[str]:
        on_loop = self._on_loop
        assert on_loop is not None

        def ask() -> asyncio.Future[str]:
            return self._timed_on_loop("alias", on_loop.alias_of(user_id))

        if self.shared is not None:
            ttl = self._alias_ttl
            return asyncio.ensure_future(self.shared.fetch_once_async("a", user_id, ask, ttl))
        return ask()

    def _details_on_loop(self, key: DetailsKey) -> asyncio.Future[Mapping[str, Any]]:
        on_loop = self._on_loop
        assert on_loop is not None

        def ask() -> asyncio.Future[dict[str, Any]]:
            return self._timed_on_loop("user_details", on_loop.user_details(*key))

        if self.shared is None:
            answer: asyncio.Future[Any] = ask()
        else:
            ttl = self._config.user_details_ttl
            answer = asyncio.ensure_future(
                self.shared.fetch_once_async("u", key, ask, lambda details: ttl)
            )
        frozen: asyncio.Future[Mapping[str, Any]] = answer.get_loop().create_future()
        answer.add_done_callback(functools.partial(_frozen, frozen))
        return frozen

    def _timed_on_loop(self, kind: str, answer: asyncio.Future[V]) -> asyncio.Future[V]:
        """``answer``, its duration and outcome told to the observers when it lands."""
        if self.observers:
            started = time.perf_counter()

            def told(done: asyncio.Future[V]) -> None:
                failed = done.cancelled() or done.exception() is not None
                self.observers.lookup_done(kind, time.perf_counter() - started, failed)

            answer.add_done_callback(told)
        return answer

    def _ttl(self, member: bool) -> float:
        return self._config.membership_ttl if member else self._config.non_membership_ttl

    def _alias_ttl(self, canonical: str) -> float:
        return self._config.non_membership_ttl

    def reset(self, client: Gateway) -> None:
        """After a fork: forget the parent's caches, threads, connections and breaker."""
        self.client = client
        self._set_on_loop(client)
        self.breaker = CircuitBreaker()
        self._executor = None
        self._lock = threading.Lock()
        for lookup in self._all():
            lookup.breaker = self.breaker
            lookup.reset()
        self.links.reset()

    def _all(self) -> list[CachedLookup[Any, Any]]:
        lookups: list[CachedLookup[Any, Any]] = [self.memberships, self.user_details]
        return lookups + [self.aliases] if self.aliases is not None else lookups

    def readiness(self) -> dict[str, Any]:
        """The gateway's circuit, and Redis's topology and health when there is one."""
        redis = {"redis": self.shared.readiness()} if self.shared is not None else {}
        return {"gateway_circuit_open": self.breaker.is_open, **redis}

    def stats(self) -> dict[str, int]:
        aliases = {"alias_calls": self.aliases.calls} if self.aliases is not None else {}
        return {
            "membership_calls": self.memberships.calls,
            "user_details_calls": self.user_details.calls,
            **aliases,
            **self.links.stats(),
            "lookups_in_flight": sum(lookup.in_flight() for lookup in self._all()),
            "circuit_opened": self.breaker.opened,
            "circuit_open": int(self.breaker.is_open),
        }

    def begin(
        self,
        memberships: Iterable[MembershipKey],
        details: DetailsKey | None,
        on_loop: bool = False,
        alias: Started[str, str] | None = None,
        within: float = 0.0,
    ) -> Pending:
        """Start the lookups a decision needs; ``on_loop``: the caller is a coroutine on the
        running event loop, so they are asked from it. ``alias``: begun already.

        A blocking caller with ``within`` seconds, time for a whole lookup, runs one new lookup
        itself after starting the others on the pool: a new visitor's one lookup costs no
        hand-off to a thread and back."""
        inline = not on_loop and self._config.lookup_timeout <= within
        members = self.memberships.begin(memberships, on_loop=on_loop, defer=inline)
        inline = inline and members.deferred is None
        asked = self.user_details.begin([details] if details else [], on_loop=on_loop, defer=inline)
        members.run_deferred()
        asked.run_deferred()
        return Pending(members, asked, alias)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._on_loop is not None:
            self._on_loop.close()

    def executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=8, thread_name_prefix="vwo-heap-lookup"
                    )
        return self._executor

    def timed(self, kind: str, call: Callable[..., V], *args: Any) -> V:
        """``call(*args)``, with its duration and outcome told to the observers (if any)."""
        if not self.observers:
            return call(*args)
        started = time.perf_counter()
        failed = True
        try:
            answer = call(*args)
            failed = False
            return answer
        finally:
            self.observers.lookup_done(kind, time.perf_counter() - started, failed)

    def _fetch_membership(self, key: MembershipKey) -> bool:
        def ask() -> bool:
            return self.timed("membership", self.client.is_member, *key)

        if self.shared is None:
            return ask()
        return self.shared.fetch_once("m", key, ask, self._ttl)

    def _fetch_alias(self, user_id: str) -> str:
        def ask() -> str:
            return self.timed("alias", self.client.alias_of, user_id)

        if self.shared is None:
            return ask()
        return self.shared.fetch_once("a", user_id, ask, self._alias_ttl)

    def _fetch_user_details(self, key: DetailsKey) -> Mapping[str, Any]:
        def ask() -> dict[str, Any]:
            return self.timed("user_details", self.client.user_details, *key)

        if self.shared is None:
            return MappingProxyType(ask())
        ttl = self._config.user_details_ttl
        return MappingProxyType(self.shared.fetch_once("u", key, ask, lambda details: ttl))


def _frozen(frozen: asyncio.Future[Mapping[str, Any]], answer: asyncio.Future[Any]) -> None:
    """User details as a read-only mapping (they are shared by every decision made on them)."""
    if frozen.done():
        return
    if answer.cancelled():
        frozen.cancel()
    elif (error := answer.exception()) is not None:
        frozen.set_exception(error)
    else:
        frozen.set_result(MappingProxyType(answer.result()))


def _membership_atom(key: MembershipKey) -> str:
    """(list id, value) as one string, told apart by the list id's length."""
    return f"{len(key[0])}:{key[0]}{key[1]}"
