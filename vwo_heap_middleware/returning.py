"""Returning visitors: from a request's raw facts straight to their visitor and decisions.

When no app hook (resolver, fallback user id, enricher) shapes the visitor, the visitor and
their decisions are a function of the request's facts (identity header, Cookie, user agent,
client address) and the settings revision alone. One lookup here then stands in for parsing
the identity, building the context, planning and the decision cache, for as long as every
decision holds (the membership answers they were made on).
"""

from __future__ import annotations

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
        self._cache: LRUCache[RequestFacts, Remembered] = LRUCache(self._maxsize)

    def recall(self, facts: RequestFacts, revision: str, keys: Iterable[str]) -> Remembered | None:
        """What was decided for these facts, if it still holds and covers ``keys``."""
        with self._lock:
            entry = self._cache.get(facts)
        if (
            entry is None
            or entry.revision != revision
            or entry.expires <= time.monotonic()
            or any(key not in entry.decisions for key in keys)
        ):
            return None
        return entry

    def remember(self, facts: RequestFacts, entry: Remembered) -> None:
        with self._lock:
            self._cache[facts] = entry

    def __len__(self) -> int:
        return len(self._cache)
