"""The decision caches: decisions by everything that can change them, and returning visitors
recalled from their request's raw facts.

When no app hook (resolver, fallback user id, enricher) shapes the visitor, the visitor and
their decisions are a function of the request's facts (identity header, Cookie, user agent,
client address) and the settings revision alone. One lookup in ``ReturningVisitors`` then stands
in for parsing the identity, building the context, planning and the decision cache, for as long
as every decision holds (the membership answers they were made on). Entries are keyed by a
128-bit digest of the facts, so a large Cookie header is not kept for every visitor.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from cachetools import LRUCache, TLRUCache

from ..config import Config
from ..decision import FlagDecision
from ..identity import fingerprint
from ..visitor import RequestFacts, Visitor


class DecisionCache:
    """Decisions by everything that can change them (the caller builds the key): each until
    the inputs it was made on expire (the membership answers), at most ``ttl`` s.

    A cached decision sends no second impression, as with the SDK's storage-backed decisions.
    """

    def __init__(self, maxsize: int, ttl: float) -> None:
        self._maxsize = maxsize
        self._ttl = ttl
        self.reset()

    def reset(self) -> None:
        """Forget everything (new settings, or a forked child: the lock may have been held)."""
        self._lock = threading.Lock()
        self._cache: TLRUCache[Hashable, tuple[FlagDecision, float]] = TLRUCache(
            self._maxsize, ttu=lambda key, entry, now: entry[1], timer=time.monotonic
        )

    def get(self, key: Hashable) -> FlagDecision | None:
        entry = self.lookup(key)
        return entry[0] if entry is not None else None

    def lookup(self, key: Hashable) -> tuple[FlagDecision, float] | None:
        """The decision and when it expires (``time.monotonic()``), or None."""
        with self._lock:
            return self._cache.get(key)

    def put(self, key: Hashable, decision: FlagDecision, expires: float = math.inf) -> float:
        """Keep ``decision`` until ``expires`` (and at most ``ttl`` s); returns when it expires."""
        now = time.monotonic()
        expires = min(expires, now + self._ttl)
        if expires > now:
            with self._lock:
                self._cache[key] = (decision, expires)
        return expires

    def __len__(self) -> int:
        return len(self._cache)


@dataclass(frozen=True, slots=True)
class Remembered:
    """A returning visitor: who they are, and their decisions while every one holds."""

    revision: str
    visitor: Visitor
    decisions: Mapping[str, FlagDecision]
    expires: float  # ``time.monotonic()`` when the first decision stops holding


class ReturningVisitors:
    """Visitors recalled from their request's raw facts, the most recent ``maxsize`` of them."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self.reset()

    def reset(self) -> None:
        """Forget everyone (new settings, a forked child)."""
        self._lock = threading.Lock()
        self._cache: LRUCache[bytes, Remembered] = LRUCache(self._maxsize)

    def recall(
        self, facts: RequestFacts, revision: str, keys: Iterable[str]
    ) -> tuple[Visitor, dict[str, FlagDecision]] | None:
        """The visitor of these facts and their decisions of ``keys``, if every one still holds
        on settings ``revision``; else None."""
        digest = _digest(facts)
        with self._lock:
            entry = self._cache.get(digest)
        if entry is None or entry.revision != revision or entry.expires <= time.monotonic():
            return None
        try:
            return entry.visitor, {key: entry.decisions[key] for key in keys}
        except KeyError:  # a key not decided for them yet
            return None

    def remember(
        self,
        facts: RequestFacts,
        revision: str,
        visitor: Visitor,
        decisions: Mapping[str, FlagDecision],
        expires: float,
    ) -> None:
        """Keep these decisions for the visitor of these facts until ``expires``."""
        if expires > time.monotonic():
            entry = Remembered(revision, visitor, dict(decisions), expires)
            with self._lock:
                self._cache[_digest(facts)] = entry

    def __len__(self) -> int:
        return len(self._cache)


def _digest(facts: RequestFacts) -> bytes:
    """The facts, told apart by a 128-bit digest: each field's kind (absent, text, bytes) and
    length go in before its value, so no two different facts share an input."""
    parts = []
    for value in (
        facts.identity_header,
        facts.cookie,
        facts.user_agent,
        facts.peer,
        facts.forwarded_for,
        facts.forwarded,
    ):
        if value is None:
            parts.append(b"\x00")
        elif isinstance(value, bytes):
            parts.append(b"\x02%d:" % len(value) + value)
        else:
            raw = value.encode("utf-8", "surrogatepass")
            parts.append(b"\x01%d:" % len(raw) + raw)
    return fingerprint(b"".join(parts))


class DecisionCaches:
    """One engine's caches: ``decisions`` (the decider's) and ``returning`` visitors (the
    engine's recall); ``reset`` forgets every decision (new settings, a forked child)."""

    def __init__(self, config: Config) -> None:
        self.decisions = DecisionCache(config.cache_size, config.decision_ttl)
        self.returning = ReturningVisitors(max(config.cache_size // 5, 1))  # the frequent ones

    def reset(self) -> None:
        self.decisions.reset()
        self.returning.reset()

    def stats(self) -> dict[str, int]:
        return {"cached_decisions": len(self.decisions), "returning_visitors": len(self.returning)}
