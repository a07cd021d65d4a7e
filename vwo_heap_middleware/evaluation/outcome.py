"""The evaluator contract, shared by the native evaluator and the SDK door.

Answers go in (the gateway's segment memberships and user details, looked up beforehand by the
engine); an ``Outcome`` comes out: the flag's state and variables, the events to send
(impressions), whether an answer it wanted was missing, and who decided. Data only: nothing
here does I/O.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

V = TypeVar("V")
MembershipKey = tuple[str, str]
"""(attribute list id, the value asked about): one ``inlist`` question to the gateway."""
DetailsKey = tuple[str | None, str | None]
"""(user agent, IP address): one ``/get-user-details`` question."""

NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})


class AnswerStatus(str, enum.Enum):
    """Where a lookup's answer came from, or why there is none."""

    FRESH = "fresh"  # from the gateway, within its TTL
    STALE = "stale"  # the gateway failed; an older answer stands in
    FAILED = "failed"  # the gateway failed (or the circuit is open) and nothing older is kept
    TIMEOUT = "timeout"  # the call was still running when the request's budget ran out


@dataclass(frozen=True, slots=True)
class Answer(Generic[V]):
    """A lookup's answer: a value when ``known`` (fresh or stale), else why there is none."""

    value: V | None
    status: AnswerStatus
    expires: float = math.inf  # a fresh answer: when (``time.monotonic()``) it stops being one

    @property
    def known(self) -> bool:
        return self.status in (AnswerStatus.FRESH, AnswerStatus.STALE)


VARIATION_SHOWN = "vwo_variationShown"


@dataclass(frozen=True, slots=True)
class Event:
    """One event for VWO (an impression, the SDK's own): its JSON body, encoded once as it is
    sent; the query of the request the SDK would have made; and, for an impression, what it
    shows: ``(visitor UUID, campaign id, variation id)``."""

    data: bytes
    query: Mapping[str, str]
    shown: tuple[str, str, str] | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any], query: Mapping[str, str]) -> Event:
        """An event from its body as a mapping (the SDK's own events)."""
        shown = None
        if query.get("en") == VARIATION_SHOWN:
            d = body.get("d") or {}
            props = (d.get("event") or {}).get("props") or {}
            shown = (str(d.get("visId")), str(props.get("id")), str(props.get("variation")))
        return cls(json.dumps(body, separators=(",", ":")).encode(), query, shown)

    @property
    def body(self) -> dict[str, Any]:
        """The body, decoded (for what reads it rarely: tests, a shadow comparison)."""
        return json.loads(self.data)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Answers:
    """What an evaluation may know beyond its context: gateway answers fetched before."""

    memberships: Mapping[MembershipKey, bool | None] = field(default_factory=dict)
    user_details: Mapping[str, Any] | None = None
    user_details_missing: bool = False  # wanted, but the lookup gave nothing


@dataclass(frozen=True, slots=True)
class Outcome:
    """One flag evaluated for one context. ``missing``: an answer it wanted was not known;
    ``error``: the evaluation failed (the SDK swallows its failures, its error log tells);
    ``evaluator``: who decided, ``"native"`` or ``"sdk"``; ``asked``: the segment memberships
    it consulted, in order."""

    enabled: bool
    variables: Mapping[str, Any] = field(default_factory=lambda: NO_VARIABLES)
    events: tuple[Event, ...] = ()
    missing: bool = False
    error: bool = False
    evaluator: str = ""
    asked: tuple[MembershipKey, ...] = ()

    def compared(self) -> tuple[Any, ...]:
        """What a shadow run compares: enabled, variables, and what each impression says
        (without its timestamps, random number and usage block)."""
        shown = []
        for event in self.events:
            props = event.body.get("d", {}).get("event", {}).get("props", {})
            shown.append((event.query.get("en"), props.get("id"), props.get("variation")))
        return (self.enabled, dict(self.variables), shown)


@dataclass(frozen=True, slots=True)
class LookedUp:
    """The answers one decision is made on, as the evaluators and the details read them."""

    memberships: Mapping[MembershipKey, Answer[bool]]
    statuses: frozenset[AnswerStatus]
    with_details: Answers
    without_details: Answers

    @classmethod
    def of(
        cls,
        memberships: Mapping[MembershipKey, Answer[bool]],
        detail: Answer[Mapping[str, Any]] | None,
    ) -> LookedUp:
        known = {key: a.value if a.known else None for key, a in memberships.items()}
        statuses = {answer.status for answer in memberships.values()}
        if detail is not None:
            statuses.add(detail.status)
        with_details = Answers(
            known,
            user_details=detail.value if detail is not None and detail.known else None,
            user_details_missing=detail is not None and not detail.known,
        )
        return cls(memberships, frozenset(statuses), with_details, Answers(known))

    @property
    def stale(self) -> bool:
        return AnswerStatus.STALE in self.statuses

    @property
    def fresh(self) -> bool:
        """Every answer fresh: a decision made on them may be cached."""
        return self.statuses <= {AnswerStatus.FRESH}


class Evaluator(Protocol):
    """Decides one flag for a VWO user context from answers looked up beforehand."""

    def evaluate(self, key: str, context: Mapping[str, Any], answers: Answers) -> Outcome: ...
