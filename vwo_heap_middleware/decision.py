"""``FlagDecision``: what one flag is for one visitor, and why; ``DecisionCache`` keeps them."""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cachetools import TLRUCache

from .config import FlagDefault


class Reason(str, enum.Enum):
    """Why a flag is what it is."""

    TARGETED = "targeted"  # a VWO rule matched and the flag is on
    NOT_TARGETED = "not_targeted"  # VWO evaluated and no rule gave this visitor the flag
    NO_USER = "no_user"  # no identity or user id: nothing to evaluate
    NOT_READY = "not_ready"  # the engine has no settings yet
    TIMEOUT = "timeout"  # the request's evaluation budget ran out
    GATEWAY_ERROR = "gateway_error"  # a segment lookup failed and no cached answer was left
    UNKNOWN_FLAG = "unknown_flag"  # the settings have no flag with this key
    ERROR = "error"  # the SDK failed
    OVERRIDE = "override"  # set by the application, not by VWO

    def __str__(self) -> str:
        return self.value


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FlagDecision:
    key: str
    enabled: bool
    variables: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    reason: Reason = Reason.NOT_TARGETED
    stale: bool = False  # decided on a segment answer kept from before the gateway failed
    evaluator: str = ""  # "native" or "sdk" when VWO's rules were evaluated; "" otherwise

    def variable(self, name: str, default: Any = None) -> Any:
        """The value of a flag variable, or ``default`` when the decision has none."""
        return self.variables.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``"stale": true`` is added only to decisions made on stale answers."""
        result = {
            "enabled": self.enabled,
            "variables": dict(self.variables),
            "reason": self.reason.value,
        }
        if self.stale:
            result["stale"] = True
        return result

    def __bool__(self) -> bool:
        return self.enabled

    @classmethod
    def default(cls, key: str, reason: Reason, default: FlagDefault) -> FlagDecision:
        """The configured default of a flag (off, no variables unless configured)."""
        return cls(key, default.enabled, default.variables, reason)


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
