"""Returning visitors: from a request's raw facts straight to their visitor and decisions.

When no app hook (resolver, fallback user id, enricher) shapes the visitor, the visitor and
their decisions are a function of the request's facts (identity header, Cookie, user agent,
client address) and the settings revision alone. One lookup here then stands in for parsing
the identity, building the context, planning and the decision cache, for as long as every
decision holds (the membership answers they were made on). Entries are keyed by a 128-bit
digest of the facts, so a large Cookie header is not kept for every visitor.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cachetools import LRUCache

from .decision import FlagDecision
from .visitor import RequestFacts, Visitor


@dataclass(frozen=True, slots=True)
class Remembered:
    revision: str
    visitor: Visitor
    decisions: Mapping[str, FlagDecision]
    expires: float  # ``time.monotonic()`` when the first decision stops holding


class ReturningVisitors:
    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self.reset()

    def reset(self) -> None:
        """Forget everyone (new settings, a forked child)."""
        self._lock = threading.Lock()
        self._cache: LRUCache[bytes, Remembered] = LRUCache(self._maxsize)

    def recall(self, facts: RequestFacts, revision: str, keys: Iterable[str]) -> Remembered | None:
        """What was decided for these facts, if it still holds and covers ``keys``."""
        key = _digest(facts)
        with self._lock:
            entry = self._cache.get(key)
        if (
            entry is None
            or entry.revision != revision
            or entry.expires <= time.monotonic()
            or any(key not in entry.decisions for key in keys)
        ):
            return None
        return entry

    def remember(self, facts: RequestFacts, entry: Remembered) -> None:
        key = _digest(facts)
        with self._lock:
            self._cache[key] = entry

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
    return hashlib.blake2b(b"".join(parts), digest_size=16).digest()
