"""Redis for many workers and hosts (the ``[redis]`` extra; on with ``VWO_HEAP_REDIS_URL``: one
node, a cluster or Sentinel, ``redis_topology``).

Three things every worker of every host shares through one Redis:

- **gateway answers**: ``/check-attribute`` memberships and ``/get-user-details``, with the same
  TTLs as in memory. A worker asks its own cache, then Redis (one ``MGET`` for all a blocking
  request needs; from the event loop, redis-py's asyncio client), then the gateway; one worker
  per key asks the gateway (``SET NX``), the others wait briefly for its answer;
- **sticky decisions**: the SDK's storage connector, so a visitor keeps the variation they were
  bucketed into while the flag's rule exists, even when the traffic split changes;
- **one impression** per visitor, campaign and variation within the decision's lifetime.

Redis helps, and is never needed for an answer: every call has a hard timeout
(``Config.redis_timeout``), failures open a circuit breaker, and meanwhile the engine works as it
does without Redis. Keys hold hashes of identities and user ids, never the raw values.

In a cluster, what one request reads in one round trip shares a slot: a visitor's memberships
are tagged with the hash of the value looked up (``m:{<hash>}:<list id>``), so the ``MGET`` of
a request about one identity goes to one node; other keys are read one at a time and spread over
the cluster. A request whose memberships name several values reads them slot by slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis
from redis.crc import key_slot

from ..config import Config
from ..evaluation.outcome import Event
from ..identity import clean_identity, fingerprint
from .breaker import CircuitBreaker
from .cached_lookup import SharedAnswer
from .loop import close_with_loop
from .redis_topology import CLUSTER, RedisTopology

logger = logging.getLogger("vwo_heap_middleware")
T = TypeVar("T")
Key = tuple[str | None, ...] | str  # a lookup's key: (list id, value), (user agent, IP), user id
LOCK_SECONDS = 2.0  # how long one worker may hold a key's gateway call for the others
POLL = 0.005


MAX_ANSWER_BYTES = 64 * 1024  # a kept gateway answer (user details are the largest), at most
CLOCK_SKEW = 60.0  # seconds another host's clock may run ahead of ours


def _shared_answer(
    found: bytes | str | None, kind: str, longest: float
) -> SharedAnswer[Any] | None:
    """A kept answer (``[value, fresh until]``), or None if none or not a valid one: Redis is
    shared, so what it holds is checked like input. A membership must be a bool, user details
    an object, and the fresh time a finite one within ``longest`` s (the longest TTL we give)
    from now: ``[false, Infinity]`` would lock a member out for good. An invalid value counts
    as absent, so the gateway is asked and the answer overwrites it."""
    if found is None or len(found) > MAX_ANSWER_BYTES:
        return None
    try:
        value, fresh_until = json.loads(found)
        fresh_for = float(fresh_until) - time.time()
    except Exception:  # not JSON, not a pair, too deep (RecursionError), too large a number
        return None
    if kind == "a":  # an alias: the id it stands for
        valid = clean_identity(value) is not None
    else:
        valid = isinstance(value, bool) if kind == "m" else isinstance(value, dict)
    timed = not isinstance(fresh_until, bool) and math.isfinite(fresh_for)
    if not valid or not timed or fresh_for > longest + CLOCK_SKEW:
        return None
    return SharedAnswer(value, fresh_for)


REDIS_FAILING = "Redis (%s) fails: %s; the engine goes on without it until it answers"
REDIS_BACK = "Redis (%s) answers again"


def _why(error: Exception) -> str:
    """What went wrong, in a few words that say what to fix (no password is ever in them)."""
    text = " ".join(str(error).split())[:200]
    if isinstance(error, redis.AuthenticationError) or text.startswith(("WRONGPASS", "NOAUTH")):
        return f"it refused the credentials in VWO_HEAP_REDIS_URL ({text})"
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return f"unreachable ({type(error).__name__}: {text})"
    return f"{type(error).__name__}: {text}"


def digest(value: str) -> str:
    """What is stored instead of an identity or a user id."""
    return fingerprint(value.encode("utf-8", "surrogatepass")).hex()


class RedisStore:
    """One Redis for every worker and host: gateway answers, impressions once, sticky decisions
    (``storage()``); every call bounded by ``Config.redis_timeout`` and a breaker."""

    def __init__(self, config: Config) -> None:
        assert config.redis_url is not None
        self.topology = RedisTopology.of(config)  # ValueError: what to fix in the URL
        self._redis = self.topology.client()
        cluster = self.topology.kind == CLUSTER
        self._mget = self._cluster_mget if cluster else self._redis.mget
        self._failing: str | None = None  # why Redis fails, said once until it answers again
        self._prefix = f"{config.redis_prefix}:{config.account_id}"
        self._config = config
        self.breaker = CircuitBreaker(window=10.0, min_calls=3, ratio=0.5, probe_interval=1.0)
        # redis-py's asyncio clients, one per event loop (their connections are the loop's)
        self._on_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._closers: set[asyncio.Task[None]] = set()

    def _call(self, call: Callable[[], T], default: T) -> T:
        """``call()`` against Redis, or ``default`` when Redis fails or is being skipped."""
        if not self.breaker.allow():
            return default
        try:
            result = call()
        except Exception as error:  # redis-py's errors, and whatever a damaged reply raises
            self._failed(error)
            return default
        self._answered()
        return result

    def _cluster_mget(self, names: list[str]) -> list[bytes | str | None]:
        """``MGET`` in a cluster: one command when the keys share a slot (a request about one
        identity), else redis-py's slot-by-slot reads."""
        if len({key_slot(name.encode()) for name in names}) == 1:
            return self._redis.mget(names)  # type: ignore[no-any-return]
        return self._redis.mget_nonatomic(names)  # type: ignore[no-any-return]

    def _failed(self, error: Exception) -> None:
        """A call failed: the breaker counts it; why is said once, until Redis answers again
        (a wrong password or an unreachable Redis is one clear line, not a line per call)."""
        self.breaker.failure()
        why = _why(error)
        if why != self._failing:
            self._failing = why
            logger.error(REDIS_FAILING, self.topology.describe(), why)

    def _answered(self) -> None:
        self.breaker.success()
        if self._failing is not None:
            self._failing = None
            logger.warning(REDIS_BACK, self.topology.describe())

    def readiness(self) -> dict[str, Any]:
        """Which Redis, and whether it answers (its last call, and the breaker)."""
        reachable = self._failing is None and not self.breaker.is_open
        return {
            "topology": self.topology.kind,
            "at": self.topology.describe(),
            "reachable": reachable,
            "error": self._failing,
        }

    # Gateway answers: memberships and user details -----------------------------------------

    def _name(self, kind: str, key: Key) -> str:
        if kind == "m":  # (list id, value): one slot per value, the list id readable
            return f"{self._prefix}:m:{{{digest(str(key[1]))}}}:{key[0]}"
        if isinstance(key, str):  # a user id (aliases)
            return f"{self._prefix}:{kind}:{digest(key)}"
        return f"{self._prefix}:{kind}:{digest(json.dumps(key))}"

    def answers(self, kind: str, keys: Iterable[Key]) -> dict[Any, SharedAnswer[Any]]:
        """The answers other workers have (``kind`` ``m``: memberships, ``u``: user details,
        ``a``: aliases), fresh or stale, in one round trip."""
        keys = list(keys)
        if not keys:
            return {}
        names = [self._name(kind, k) for k in keys]
        nothing: list[bytes | str | None] = [None] * len(keys)
        found = self._call(lambda: self._mget(names), nothing)
        longest = self._longest(kind)
        kept = {k: _shared_answer(v, kind, longest) for k, v in zip(keys, found, strict=True)}
        return {k: v for k, v in kept.items() if v is not None}

    def _longest(self, kind: str) -> float:
        """The longest a ``kind`` of answer is ever kept fresh."""
        config = self._config
        if kind == "m":
            return max(config.membership_ttl, config.non_membership_ttl)
        return config.user_details_ttl if kind == "u" else config.non_membership_ttl

    def _kept(self, kind: str, found: bytes | str | None) -> SharedAnswer[Any] | None:
        return _shared_answer(found, kind, self._longest(kind))

    def _record(self, value: Any, ttl: float) -> tuple[str, float]:
        """A gateway answer as kept, and for how long: fresh for ``ttl`` s, then stale (a
        restarted worker's fallback while the gateway is down) for
        ``Config.stale_membership_ttl`` s more."""
        return json.dumps([value, time.time() + ttl]), ttl + self._config.stale_membership_ttl

    def fetch_once(
        self,
        kind: str,
        key: Key,
        fetch: Callable[[], T],
        ttl: Callable[[T], float],
    ) -> T:
        """One worker of all asks the gateway for ``key``; the others wait briefly for it."""
        name = self._name(kind, key)
        lock = f"{name}:lock"
        if self._set(lock, b"1", LOCK_SECONDS, only_new=True, default=True):
            value = fetch()
            if ttl(value) > 0:
                self._set(name, *self._record(value, ttl(value)))
            self._call(lambda: self._redis.delete(lock), None)
            return value
        deadline = time.monotonic() + self._config.lookup_timeout
        while time.monotonic() < deadline:
            kept = self._kept(kind, self._call(lambda: self._redis.get(name), None))
            if kept is not None and kept.fresh_for > 0:
                return kept.value  # type: ignore[no-any-return]
            time.sleep(POLL)
        return fetch()  # the other worker is slow: ask ourselves

    async def fetch_once_async(
        self,
        kind: str,
        key: Key,
        fetch: Callable[[], Awaitable[T]],
        ttl: Callable[[T], float],
    ) -> T:
        """``fetch_once`` from an event loop, with redis-py's asyncio client: the answer other
        workers have, else one worker asks the gateway while the others wait briefly. A stale
        answer found travels with the gateway's failure (``error.stale``)."""
        client = self._client_on_loop()
        name = self._name(kind, key)
        kept = self._kept(kind, await self._call_async(lambda: client.get(name), None))
        if kept is not None and kept.fresh_for > 0:
            return kept.value  # type: ignore[no-any-return]
        try:
            lock = f"{name}:lock"
            lock_ms = int(LOCK_SECONDS * 1000)
            if await self._call_async(lambda: client.set(lock, b"1", px=lock_ms, nx=True), True):
                value = await fetch()
                if ttl(value) > 0:
                    record, seconds = self._record(value, ttl(value))
                    px = max(int(seconds * 1000), 1)
                    await self._call_async(lambda: client.set(name, record, px=px), None)
                await self._call_async(lambda: client.delete(lock), None)
                return value
            deadline = time.monotonic() + self._config.lookup_timeout
            while time.monotonic() < deadline:
                await asyncio.sleep(POLL)
                found = self._kept(kind, await self._call_async(lambda: client.get(name), None))
                if found is not None and found.fresh_for > 0:
                    return found.value  # type: ignore[no-any-return]
            return await fetch()  # the other worker is slow: ask ourselves
        except Exception as error:
            if kept is not None:
                error.stale = kept.value  # type: ignore[attr-defined]
            raise

    def claim_alias(self, alias_id: str, user_id: str) -> str | None:
        """Claim linking ``alias_id`` to ``user_id`` for the fleet: None when this worker is
        to tell the gateway (it claimed it, or Redis fails), else the id another worker
        linked it to first (the same one, from another worker seeing the same login)."""
        name = f"{self._prefix}:alias:{digest(alias_id)}"
        if self._set(name, user_id, self._config.sticky_ttl, only_new=True, default=True):
            self.keep_answer("a", alias_id, user_id, self._config.non_membership_ttl)
            return None
        found = self._call(lambda: self._redis.get(name), None)
        text = found.decode("utf-8", "replace") if isinstance(found, bytes) else found
        return clean_identity(text)  # junk (or gone): None, ours to tell

    def release_alias(self, alias_id: str) -> None:
        """The gateway was not told: let the next login (any worker's) link it."""
        self._call(lambda: self._redis.delete(f"{self._prefix}:alias:{digest(alias_id)}"), None)

    def keep_answer(self, kind: str, key: Key, value: object, ttl: float) -> None:
        """Keep an answer for every worker (one the gateway has just been told)."""
        self._set(self._name(kind, key), *self._record(value, ttl))

    # Settings: one fetch per interval for the fleet, the last good revision kept -------------

    def claim_settings_fetch(self, interval: float) -> bool:
        """True for the one worker that should ask the gateway this interval (and for every
        worker while Redis fails)."""
        lock = f"{self._prefix}:settings:lock"
        return self._set(lock, b"1", interval, only_new=True, default=True)

    def kept_settings(self) -> bytes | str | None:
        """The settings document a worker kept (``state.kept_settings``), or None."""
        kept: bytes | str | None = self._call(
            lambda: self._redis.get(f"{self._prefix}:settings"), None
        )
        return kept

    def keep_settings(self, document: str) -> None:
        """Keep a settings document for every worker, as long as it may be used."""
        ttl = max(self._config.kept_settings_max_age, 1.0)
        self._set(f"{self._prefix}:settings", document, ttl)

    def _client_on_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._on_loops.get(loop)
        if client is None:
            client = self._on_loops[loop] = self.topology.client_on_loop()
            self._closers.add(close_with_loop(loop, client.aclose))
        return client

    async def _call_async(self, call: Callable[[], Awaitable[T]], default: T) -> T:
        if not self.breaker.allow():
            return default
        try:
            result = await call()
        except Exception as error:  # redis-py's errors, timeouts, whatever a damaged reply raises
            self._failed(error)
            return default
        self._answered()
        return result

    # Impressions -----------------------------------------------------------------------------

    def first_impression(self, event: Event) -> bool:
        """True for the first impression of a visitor, campaign and variation in the decision's
        lifetime across all workers (and for every other event, and whenever Redis fails)."""
        if event.shown is None:
            return True
        visitor, campaign, variation = event.shown
        name = f"{self._prefix}:i:{campaign}:{variation}:{visitor}"
        return self._set(name, b"1", self._config.decision_ttl, only_new=True, default=True)

    def _set(
        self,
        name: str,
        value: bytes | str,
        seconds: float,
        *,
        only_new: bool = False,
        default: bool = False,
    ) -> bool:
        """``SET name value PX seconds [NX]``: True when it was set."""
        ttl = max(int(seconds * 1000), 1)
        return self._call(lambda: bool(self._redis.set(name, value, px=ttl, nx=only_new)), default)

    # Sticky decisions ------------------------------------------------------------------------

    def storage(self) -> StickyDecisions:
        return StickyDecisions(self)


class StickyDecisions:
    """The SDK's storage connector (``get(feature_key, user_id)``, ``set(data)``) on Redis.

    The SDK stores which rule and variation a visitor got and, while that rule exists, reuses it
    instead of bucketing again. Stored under a hash of the user id, without the user id.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def _name(self, feature_key: str, user_id: str) -> str:
        return f"{self._store._prefix}:s:{feature_key}:{digest(str(user_id))}"

    def get(self, feature_key: str, user_id: str) -> dict[str, Any] | None:
        name = self._name(feature_key, user_id)
        raw = self._store._call(lambda: self._store._redis.get(name), None)
        try:
            data = json.loads(raw) if raw is not None else None
        except Exception:  # damaged, or too deep to parse
            return None
        if not isinstance(data, dict):
            return None
        return {**data, "featureKey": feature_key, "userId": user_id}

    def set(self, data: Mapping[str, Any]) -> None:
        feature_key, user_id = data.get("featureKey"), data.get("userId")
        if not isinstance(feature_key, str) or user_id is None:
            return
        kept = {
            k: v for k, v in data.items() if k not in ("featureKey", "userId") and v is not None
        }
        name = self._name(feature_key, str(user_id))
        self._store._set(name, json.dumps(kept, sort_keys=True), self._store._config.sticky_ttl)
