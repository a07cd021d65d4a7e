"""The decision caches: decisions by everything that can change them, and returning visitors
recalled from their request's raw facts.

When no app hook (resolver, fallback user id, enricher) shapes the visitor, the visitor and
their decisions are a function of the request's facts (identity header, Cookie, user agent,
client address) and the settings revision alone. One lookup in ``ReturningVisitors`` then stands
in for parsing the identity, building the context, planning and the decision cache, for as long
as every decision holds (the membership answers they were made on). Entries are keyed by a
128-bit digest of the facts, so a large Cookie header is not kept for every visitor.

What is kept per visitor is atoms only (strings, numbers, tuples of them): the garbage collector
then has nothing of theirs to walk, however many visitors are cached. Decisions are ``Interned``:
each distinct one exists once and entries hold its number.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ..config import Config
from ..decision import FlagDecision
from ..identity import fingerprint
from ..visitor import RequestFacts, Visitor
from . import overrides
from .flag_index import FlagIndex

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringMap(Generic[K, V]):
    """A bounded map whose entries expire each at its own time, checked when read.

    Two generations of plain dicts, one of values and one of expiry times: entries go into the
    young one; when it holds half of ``maxsize`` it becomes the old one and the old one is
    dropped; a hit in the old one moves back to the young one. So the recently used stay, the
    bound holds, and every step is O(1). Given atoms for keys and values (strings, bytes,
    numbers), the dicts hold nothing the garbage collector tracks, so they are never walked.
    Thread-safe.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.clear()

    def clear(self) -> None:
        """Forget everything (and take a new lock: a forked child's may have been held)."""
        self._lock = threading.Lock()
        self._young: dict[K, V] = {}
        self._young_expires: dict[K, float] = {}
        self._old: dict[K, V] = {}
        self._old_expires: dict[K, float] = {}

    def get(self, key: K, now: float) -> tuple[V, float] | None:
        """``(value, expires)`` while ``now`` is before it expires, else None."""
        with self._lock:
            expires = self._young_expires.get(key)
            if expires is not None:
                value = self._young[key]
            else:
                expires = self._old_expires.pop(key, None)
                if expires is None:
                    return None
                value = self._old.pop(key)
                if expires > now:
                    self._put(key, value, expires)
        return (value, expires) if expires > now else None

    def put(self, key: K, value: V, expires: float) -> None:
        with self._lock:
            if self._old_expires.pop(key, None) is not None:
                del self._old[key]
            self._put(key, value, expires)

    def _put(self, key: K, value: V, expires: float) -> None:
        self._young[key] = value
        self._young_expires[key] = expires
        if len(self._young) * 2 >= self.maxsize:
            self._old, self._old_expires = self._young, self._young_expires
            self._young, self._young_expires = {}, {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class Interned:
    """Every distinct decision once, numbered: cache entries keep the number. A flag has a
    handful of outcomes per settings revision, so the table stays small; past ``limit`` entries
    (settings changing all day) decisions are kept as they are. What comes back out is the
    decision as recalled: its details say ``cached``."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._numbers: dict[tuple[Any, ...], int] = {}
        self._recalled: list[FlagDecision] = []

    def number(self, decision: FlagDecision) -> int | FlagDecision:
        # A native decision's variables are its variation's mapping, compiled once and kept
        # alive by the interned decision (so its id is never another's); others by content.
        variables: object = id(decision.variables)
        if decision.evaluator != "native":
            variables = json.dumps(dict(decision.variables), sort_keys=True, default=repr)
        key = (
            decision.key,
            decision.enabled,
            variables,
            decision.reason,
            decision.stale,
            decision.evaluator,
            decision.details,
        )
        with self._lock:
            number = self._numbers.get(key)
            if number is None:
                if len(self._recalled) >= self._limit:
                    return recalled(decision)
                number = self._numbers[key] = len(self._recalled)
                self._recalled.append(recalled(decision))
            return number

    def decision(self, number: int | FlagDecision) -> FlagDecision:
        return self._recalled[number] if isinstance(number, int) else number


def recalled(decision: FlagDecision) -> FlagDecision:
    """``decision`` as a cache gives it back: ``details.cached``."""
    if decision.details.cached:
        return decision
    return dataclasses.replace(decision, details=dataclasses.replace(decision.details, cached=True))


class DecisionCache:
    """Decisions by everything that can change them (the caller builds the key, a string):
    each until the inputs it was made on expire (the membership answers), at most ``ttl`` s.

    A cached decision sends no second impression, as with the SDK's storage-backed decisions.
    """

    def __init__(self, maxsize: int, ttl: float, interned: Interned | None = None) -> None:
        self._ttl = ttl
        self._interned = interned or Interned()
        self._map: ExpiringMap[str, int | FlagDecision] = ExpiringMap(maxsize)

    def reset(self) -> None:
        """Forget everything (new settings, or a forked child)."""
        self._map.clear()

    def get(self, key: str) -> FlagDecision | None:
        entry = self.lookup(key)
        return entry[0] if entry is not None else None

    def lookup(self, key: str) -> tuple[FlagDecision, float] | None:
        """The decision and when it expires (``time.monotonic()``), or None."""
        entry = self._map.get(key, time.monotonic())
        if entry is None:
            return None
        return self._interned.decision(entry[0]), entry[1]

    def put(self, key: str, decision: FlagDecision, expires: float = math.inf) -> float:
        """Keep ``decision`` until ``expires`` (and at most ``ttl`` s); returns when it expires."""
        now = time.monotonic()
        expires = min(expires, now + self._ttl)
        if expires > now:
            self._map.put(key, self._interned.number(decision), expires)
        return expires

    def __len__(self) -> int:
        return len(self._map)


class ReturningVisitors:
    """Visitors recalled from their request's raw facts, the most recent ``maxsize`` of them,
    with their decisions of ``keys`` (the flags every request decides).

    An entry is one string: the settings revision, a character per decision (its number) and
    the visitor's atoms joined by ``SEPARATOR`` (a visitor with that character in a header is
    not kept). Recalling one reads two slices; the visitor is built only when asked for.
    """

    SEPARATOR = "\x1f"
    _OFFSET = 0x100  # numbers as characters past the control characters

    def __init__(
        self,
        maxsize: int,
        custom_variable: str,
        keys: tuple[str, ...],
        interned: Interned | None = None,
    ) -> None:
        self._interned = interned or Interned()
        self._custom_variable = custom_variable  # the one a visitor no app hook shaped has
        self._keys = keys
        self._map: ExpiringMap[bytes, str] = ExpiringMap(maxsize)
        # The last facts digested: a new visitor's are digested to recall, then to remember.
        # One tuple, replaced whole: threads may race for it, never get another's digest.
        self._last: tuple[RequestFacts | None, bytes] = (None, b"")
        # Each line of decisions as a read-only mapping, made once: a handful per revision.
        self._lines: dict[str, Mapping[str, FlagDecision]] = {}

    def reset(self) -> None:
        """Forget everyone (new settings, a forked child)."""
        self._map.clear()
        self._lines = {}

    def recall(
        self, facts: RequestFacts, revision: str
    ) -> tuple[Callable[[], Visitor], Mapping[str, FlagDecision]] | None:
        """The visitor of these facts (a function that builds it) and their decisions of
        ``keys``, if every one still holds on settings ``revision``; else None."""
        found = self._map.get(self._digest(facts), time.monotonic())
        if found is None:
            return None
        entry = found[0]
        cut = len(revision)
        if not entry.startswith(revision):
            return None
        numbers = entry[cut : cut + len(self._keys)]
        decisions = self._lines.get(numbers) or self._line(numbers)
        atoms = entry[cut + len(self._keys) :]
        return functools.partial(self._visitor, atoms), decisions

    def _line(self, numbers: str) -> Mapping[str, FlagDecision]:
        decision, offset = self._interned.decision, self._OFFSET
        line = MappingProxyType(
            {
                key: decision(ord(char) - offset)
                for key, char in zip(self._keys, numbers, strict=True)
            }
        )
        if len(self._lines) < 4096:
            self._lines[numbers] = line
        return line

    def _visitor(self, atoms: str) -> Visitor:
        parts = tuple(part or None for part in atoms.split(self.SEPARATOR))
        return Visitor.from_atoms(parts, self._custom_variable)

    def remember(
        self,
        facts: RequestFacts,
        revision: str,
        visitor: Visitor,
        decisions: Mapping[str, FlagDecision],
        expires: float,
    ) -> None:
        """Keep these decisions for the visitor of these facts until ``expires``, when they are
        the decisions of ``keys``."""
        if expires <= time.monotonic() or tuple(decisions) != self._keys:
            return
        numbers = [self._interned.number(d) for d in decisions.values()]
        if not all(isinstance(n, int) for n in numbers):
            return  # the table of decisions is full
        atoms = [atom or "" for atom in visitor.atoms()]
        if any(self.SEPARATOR in atom for atom in atoms):
            return
        chars = "".join(chr(n + self._OFFSET) for n in numbers)  # type: ignore[operator]
        self._map.put(self._digest(facts), revision + chars + self.SEPARATOR.join(atoms), expires)

    def _digest(self, facts: RequestFacts) -> bytes:
        last = self._last
        if last[0] is facts:
            return last[1]
        digest = _digest(facts)
        self._last = (facts, digest)
        return digest

    def __len__(self) -> int:
        return len(self._map)


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
    engine's recall), sharing one table of interned decisions; ``reset`` forgets every decision
    (new settings, a forked child)."""

    def __init__(self, config: Config) -> None:
        self._recalls = not config.hooks  # else visitors are not a function of facts alone
        interned = Interned()
        self.decisions = DecisionCache(config.cache_size, config.decision_ttl, interned)
        most = max(config.cache_size // 5, 1)  # the frequent ones
        self.returning = ReturningVisitors(most, config.custom_variable, config.flags, interned)

    def reset(self) -> None:
        self.decisions.reset()
        self.returning.reset()

    def recall(
        self, facts: RequestFacts, index: FlagIndex | None
    ) -> tuple[Callable[[], Visitor], Mapping[str, FlagDecision]] | None:
        """A returning visitor's decisions of ``Config.flags`` on these settings, when nothing
        can have changed them: no app hook shapes visitors, nothing is overridden."""
        if not self._recalls or index is None or overrides.current():
            return None
        return self.returning.recall(facts, index.revision)

    def remember(
        self,
        facts: RequestFacts,
        revision: str | None,
        visitor: Visitor,
        decisions: Mapping[str, FlagDecision],
        expires: float,
    ) -> None:
        if self._recalls and revision is not None:
            self.returning.remember(facts, revision, visitor, decisions, expires)

    def stats(self) -> dict[str, int]:
        return {"cached_decisions": len(self.decisions), "returning_visitors": len(self.returning)}
