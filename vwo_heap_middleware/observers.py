"""What integrations (OpenFeature, OpenTelemetry) see of an engine: its requests, decisions,
lookups and settings. Subclass ``Observer`` and ``engine.add_observer(observer)``.

An observer's failure never reaches the request: the first one of each kind is logged with its
traceback, later ones at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from .decision import FlagDecision
from .identity import short_hash
from .visitor import Visitor

logger = logging.getLogger("vwo_heap_middleware")


class RequestView(Protocol):
    """What observers see of a request's flags (``request_flags.RequestFlags``)."""

    @property
    def visitor(self) -> Visitor: ...

    @property
    def user_id(self) -> str | None: ...


DECIDED = "flag %s: %s for user %s"
OBSERVER_FAILED = "observer %s failed in %s; the request goes on (later failures at DEBUG)"


class Observer:
    """Every method is optional: the defaults do nothing."""

    def request_opened(self, flags: RequestView) -> None:
        """A request's flags exist (``Config.flags`` decided), before the app runs."""

    def flag_read(self, flags: RequestView, decision: FlagDecision) -> None:
        """The app read a decision of this request (the first time, per key)."""

    def request_closed(self, flags: RequestView) -> None:
        """The request is over."""

    def decided(self, decisions: Mapping[str, FlagDecision], cached: int) -> None:
        """One ``decide`` call's results; ``cached`` of them came from the decision cache."""

    def lookup_done(self, kind: str, seconds: float, failed: bool) -> None:
        """A gateway lookup (``membership`` or ``user_details``) finished."""

    def settings_loaded(self, revision: str, flags: int) -> None:
        """A new settings revision is in use."""


class Observers(Observer):
    """Fans each call out to the registered observers."""

    def __init__(self, log_key: bytes = b"") -> None:
        self._observers: tuple[Observer, ...] = ()
        self._failed: set[tuple[int, str]] = set()
        self._log_key = log_key  # identity hashes in the debug log (``Config.log_key``)

    def report(
        self,
        visitor: Visitor | Callable[[], Visitor],
        decisions: Mapping[str, FlagDecision],
        cached: int,
    ) -> None:
        """One ``decide`` (or recall): to the observers, and to the log at DEBUG, each decision
        with a hash of the user id (``visitor`` may be a function that builds the visitor)."""
        if self._observers:
            self.decided(decisions, cached)
        if logger.isEnabledFor(logging.DEBUG):
            if not isinstance(visitor, Visitor):
                visitor = visitor()
            user = short_hash(visitor.user_id or "", key=self._log_key)
            for d in decisions.values():
                extra = {"flag_key": d.key, "flag_reason": d.reason.value, "user_hash": user}
                logger.debug(DECIDED, d.key, d.reason.value, user, extra=extra)

    def add(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)

    def remove(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def request_opened(self, flags: RequestView) -> None:
        self._each("request_opened", flags)

    def flag_read(self, flags: RequestView, decision: FlagDecision) -> None:
        self._each("flag_read", flags, decision)

    def request_closed(self, flags: RequestView) -> None:
        self._each("request_closed", flags)

    def decided(self, decisions: Mapping[str, FlagDecision], cached: int) -> None:
        self._each("decided", decisions, cached)

    def lookup_done(self, kind: str, seconds: float, failed: bool) -> None:
        self._each("lookup_done", kind, seconds, failed)

    def settings_loaded(self, revision: str, flags: int) -> None:
        self._each("settings_loaded", revision, flags)

    def _each(self, method: str, *args: object) -> None:
        for observer in self._observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                kind = (id(observer), method)
                if kind in self._failed:
                    logger.debug(OBSERVER_FAILED, type(observer).__name__, method, exc_info=True)
                else:
                    self._failed.add(kind)
                    logger.exception(OBSERVER_FAILED, type(observer).__name__, method)
