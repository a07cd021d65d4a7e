"""``RequestFlags``: the flags of one request, as views and templates see them.

The middleware evaluates ``Config.flags`` once per request; any other key is evaluated on first
access and kept for the rest of the request. The current request's flags are also in a
``ContextVar``, so code without the request object (a decorator, a template helper, a log
filter) reaches them through ``get_flags()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from .context import Visitor
from .decision import FlagDecision, Reason
from .engine import FlagEngine

Refuse = Callable[[int, "str | None"], Any]
"""``refuse(status, redirect_to)``: the framework's "no page" answer (raises or returns)."""

current_flags: ContextVar[RequestFlags | None] = ContextVar("vwo_heap_flags", default=None)


def get_flags() -> RequestFlags | None:
    """The current request's flags, or None outside a request the middleware saw."""
    return current_flags.get()


class RequestFlags:
    """Read a request's flags: ``flags.enabled(key)``, ``flags[key]``, ``flags.variable(...)``."""

    def __init__(
        self,
        engine: FlagEngine,
        visitor: Visitor,
        *,
        request: Any = None,
        refuse: Refuse | None = None,
    ) -> None:
        self.engine = engine
        self.visitor = visitor
        self.request = request
        self.refuse = refuse
        self.read = False  # the response depends on the visitor: it must Vary
        self.seconds = 0.0
        self._decisions: dict[str, FlagDecision] = {}

    @property
    def identity(self) -> str | None:
        return self.visitor.identity

    @property
    def user_id(self) -> str | None:
        return self.visitor.user_id

    def load(self, keys: Iterable[str]) -> None:
        """Decide the keys not decided yet (blocking; see ``load_async`` in async code)."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._decisions]
        if missing:
            started = time.perf_counter()
            self._decisions.update(self.engine.decide(self.visitor, missing))
            self.seconds += time.perf_counter() - started

    async def load_async(self, keys: Iterable[str]) -> None:
        """Decide the keys not decided yet, without blocking the event loop."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._decisions]
        if missing:
            started = time.perf_counter()
            self._decisions.update(await self.engine.decide_async(self.visitor, missing))
            self.seconds += time.perf_counter() - started

    def get(self, key: str) -> FlagDecision:
        """The decision for ``key``, evaluated now if this request has not asked before."""
        self.read = True
        if key not in self._decisions:
            if not isinstance(key, str):
                return FlagDecision(str(key), False, reason=Reason.UNKNOWN_FLAG)
            self.load([key])
        return self._decisions[key]

    __getitem__ = get

    def enabled(self, key: str) -> bool:
        return self.get(key).enabled

    def variable(self, key: str, name: str, default: Any = None) -> Any:
        """A variable of flag ``key``; ``default`` when the flag is off or lacks it."""
        decision = self.get(key)
        return decision.variable(name, default) if decision.enabled else default

    def override(self, key: str, enabled: bool, variables: dict[str, Any] | None = None) -> None:
        """Set a decision for this request only (tests, previews); reason ``override``."""
        self._decisions[key] = FlagDecision(key, enabled, dict(variables or {}), Reason.OVERRIDE)

    def __contains__(self, key: object) -> bool:
        """True when ``key`` has been decided for this request."""
        return key in self._decisions

    def __iter__(self) -> Iterator[FlagDecision]:
        self.read = True
        return iter(list(self._decisions.values()))

    def __len__(self) -> int:
        return len(self._decisions)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        self.read = True
        return {key: decision.to_dict() for key, decision in self._decisions.items()}

    def __repr__(self) -> str:
        states = ", ".join(
            f"{k}={'on' if d.enabled else 'off'}" for k, d in self._decisions.items()
        )
        return f"<RequestFlags {states}>"

    # Response headers, shared by the adapters ------------------------------------------------

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers to add: ``Vary`` when flags were read, and the opt-in debug headers."""
        config = self.engine.config
        headers = []
        if self.read:
            headers.append(("Vary", "Cookie"))
            if config.header_identity_allowed:
                headers.append(("Vary", config.identity_header))
        if config.server_timing:
            headers.append(("Server-Timing", f"flags;dur={self.seconds * 1000:.2f}"))
        if config.debug_header:
            listed = ", ".join(
                f"{k}={'on' if d.enabled else 'off'};{d.reason.value}"
                for k, d in self._decisions.items()
            )
            headers.append(("X-Flags", listed))
        return headers


def merge_vary(existing: str | None, added: Iterable[str]) -> str:
    """``Vary`` with ``added`` appended once each (case-insensitive), keeping what was there."""
    values = [v.strip() for v in (existing or "").split(",") if v.strip()]
    seen = {v.lower() for v in values}
    for value in added:
        if value.lower() not in seen:
            values.append(value)
            seen.add(value.lower())
    return ", ".join(values)
