"""One ``decide`` call, planned and finished, with no I/O: the engine does the lookups between.

``Decider.load`` gives the SDK new settings and compiles them for the native evaluator.
``Decider.plan`` answers what overrides and the decision cache know, and says which gateway
answers the rest needs; ``finish`` turns the answers the engine looked up (or their absence)
into decisions and the events to send, each flag evaluated natively where it can be
(``Config.evaluation``) and by the SDK otherwise, caching the ones made on fresh answers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .config import Config
from .decision import NO_DETAILS, DecisionDetails, FlagDecision, Reason
from .evaluation import overrides
from .evaluation.caches import DecisionCache
from .evaluation.flag_index import FlagIndex, FlagNeeds
from .evaluation.native import Fallback, NativeSettings
from .evaluation.outcome import (
    Answer,
    Answers,
    AnswerStatus,
    DetailsKey,
    Event,
    MembershipKey,
    Outcome,
)
from .identity import short_hash
from .visitor import Visitor
from .vwo_sdk import VwoSdk, installed, sdk_version

logger = logging.getLogger("vwo_heap_middleware")

SETTINGS_LOADED = "VWO settings loaded: revision %s, %d flags"
UNKNOWN_FLAGS = "VWO_HEAP_FLAGS names flags these settings lack: %s; they have: %s"
NATIVE_OFF = "native evaluation is off: %s; the VWO SDK decides every flag"
STICKY = "sticky decisions (Redis storage) are kept by the SDK"
BY_SDK = "flag %r is decided by the VWO SDK: the native evaluator does not cover %s"
FELL_BACK = "flag %r for user %s: decided by the VWO SDK (%s)"
SHADOW_DIFFERS = "shadow evaluation: flag %r for user %s differs: SDK %s, native %s"
DECIDED = "flag %r for user %s: %s"


@dataclass
class Plan:
    """One ``decide`` call: what overrides and the cache answered, and what the rest needs
    (``memberships``, ``details``) before ``finish``."""

    deadline: float
    index: FlagIndex | None = None  # the settings decided on (None: not ready)
    results: dict[str, FlagDecision] = field(default_factory=dict)
    todo: dict[str, tuple[FlagNeeds, str]] = field(default_factory=dict)  # needs, cache key
    memberships: set[MembershipKey] = field(default_factory=set)
    details: DetailsKey | None = None
    cached: int = 0  # results that came from the decision cache
    # When the first of the results stops holding (``time.monotonic()``); -inf when one of
    # them must not be reused (an override, a default for a failure, a stale answer).
    expires: float = math.inf

    @property
    def revision(self) -> str | None:
        return self.index.revision if self.index is not None else None

    def left(self) -> float:
        """Seconds of the budget still left to wait for lookups."""
        return max(self.deadline - time.monotonic(), 0.0)


class Decider:
    """Plans and finishes decisions over the native evaluator and the SDK door; pure: it
    starts no I/O and calls no gateway."""

    def __init__(self, config: Config, sdk: VwoSdk, decisions: DecisionCache) -> None:
        self.config = config
        self._sdk = sdk
        self._decisions = decisions
        self._native: NativeSettings | None = None
        self._usage_meta: Mapping[str, Any] | None = None  # for the first native impression
        self._usage_lock = threading.Lock()
        self.by_sdk: Mapping[str, str] = {}  # flags the SDK decides, and why

    def load(self, settings: dict[str, Any], current: FlagIndex | None = None) -> FlagIndex | None:
        """Settings of a new revision for the SDK (``SettingsRejected`` if it refuses them),
        then for the native evaluator unless ``evaluation="sdk"`` or this SDK is not one it was
        proven on; returns their index, or None when they are ``current``'s revision."""
        index = FlagIndex.from_settings(settings)
        if current is not None and index.revision == current.revision:
            return None
        self._sdk.load(settings)
        extra = {"settings_revision": index.revision, "flag_count": len(index.flags)}
        logger.info(SETTINGS_LOADED, index.revision, len(index.flags), extra=extra)
        if missing := [key for key in self.config.flags if key not in index.flags]:
            # once per revision: a typo would otherwise show only as unknown_flag
            logger.warning(UNKNOWN_FLAGS, ", ".join(missing), ", ".join(sorted(index.flags)))
        self._native, self.by_sdk = None, {}
        if self.config.evaluation != "sdk":
            self._compile(settings)
        return index

    def _compile(self, settings: dict[str, Any]) -> None:
        problem = STICKY if self._sdk.sticky else self._sdk.native_problem()
        if problem is not None:  # Redis storage is a choice; an unproven SDK is a surprise
            level = logging.INFO if self._sdk.sticky else logging.WARNING
            logger.log(level, NATIVE_OFF, problem)
            self.by_sdk = {str(f.get("key")): problem for f in settings.get("features") or []}
            return
        native = NativeSettings(settings, self._sdk.facts())
        for key, why in native.unsupported.items():
            logger.info(BY_SDK, key, why)
        self._native, self.by_sdk = native, MappingProxyType(dict(native.unsupported))
        if self.config.evaluation == "native":
            self._usage_meta = self._sdk.take_usage_meta()

    def readiness(self) -> dict[str, Any]:
        """Who decides: the SDK's release and patches, the evaluation mode, flags left to it."""
        return {
            "sdk_version": sdk_version(),
            "sdk_patches": list(installed()),
            "evaluation": self.config.evaluation,
            "decided_by_sdk": dict(self.by_sdk),
        }

    def plan(
        self, index: FlagIndex | None, visitor: Visitor, keys: list[str], deadline: float
    ) -> Plan:
        """Answer what overrides and the cache know; say what the rest needs. ``index`` is None
        while the engine is not ready."""
        plan = Plan(deadline, index)
        forced = overrides.current()
        if forced:
            plan.results = {key: forced[key] for key in keys if key in forced}
            keys = [key for key in keys if key not in forced]
            plan.expires = -math.inf
        context = visitor.context
        if index is None:
            plan.results.update(self.defaults(keys, Reason.NOT_READY))
            plan.expires = -math.inf
            return plan
        if context is None:
            plan.results.update(self.defaults(keys, Reason.NO_USER))
            return plan
        custom = context["custom_variables"]
        facts = (context.get("user_agent"), context.get("ip_address"))
        # The cache key, one string: everything that can change the decision, each repr'd.
        base = repr((index.revision, visitor.user_id, sorted(custom.items())))
        with_facts = ""
        for key in keys:
            needs = index.flags.get(key)
            if needs is None:
                plan.results[key] = self._default(key, Reason.UNKNOWN_FLAG)
                continue
            if needs.request_facts:
                with_facts = with_facts or f"{base}{facts!r}"
                cache_key = f"{key!r}{with_facts}"
            else:
                cache_key = f"{key!r}{base}"
            cached = self._decisions.lookup(cache_key)
            if cached is not None:
                plan.results[key], expires = cached
                plan.expires = min(plan.expires, expires)
                plan.cached += 1
            else:
                plan.todo[key] = (needs, cache_key)
                plan.memberships |= needs.memberships(custom)
                if needs.user_details and any(facts):
                    plan.details = facts
        return plan

    def _default(self, key: str, reason: Reason) -> FlagDecision:
        return FlagDecision.default(key, reason, self.config.default_for(key))

    def defaults(self, keys: Iterable[str], reason: Reason) -> dict[str, FlagDecision]:
        return {key: self._default(key, reason) for key in keys}

    def finish(
        self,
        plan: Plan,
        visitor: Visitor,
        memberships: Mapping[MembershipKey, Answer[bool]],
        detail: Answer[Mapping[str, Any]] | None = None,
    ) -> list[Event]:
        """Decide what the cache did not know, from the answers the engine looked up (waited
        for or not); returns the events to send."""
        known = {key: a.value if a.known else None for key, a in memberships.items()}
        statuses = {answer.status for answer in memberships.values()}
        if detail is not None:
            statuses.add(detail.status)
        stale = AnswerStatus.STALE in statuses
        custom = (visitor.context or {}).get("custom_variables", {})
        with_details = Answers(
            known,
            user_details=detail.value if detail is not None and detail.known else None,
            user_details_missing=detail is not None and not detail.known,
        )
        without_details = Answers(known)
        events: list[Event] = []
        for key, (needs, cache_key) in plan.todo.items():
            answers = with_details if needs.user_details else without_details
            outcome = self._evaluate(key, visitor, answers)
            events += outcome.events
            expires = -math.inf
            if outcome.error:
                decision = self._default(key, Reason.ERROR)
            elif outcome.missing and not outcome.enabled:
                timed_out = AnswerStatus.TIMEOUT in statuses
                default = self._default(key, Reason.TIMEOUT if timed_out else Reason.GATEWAY_ERROR)
                details = self._details(plan, key, outcome, memberships)  # which were unknown
                decision = dataclasses.replace(default, details=details)
            else:
                reason = Reason.TARGETED if outcome.enabled else Reason.NOT_TARGETED
                details = self._details(plan, key, outcome, memberships)
                decision = FlagDecision(
                    key,
                    outcome.enabled,
                    outcome.variables,
                    reason,
                    stale,
                    outcome.evaluator,
                    details,
                )
                if statuses <= {AnswerStatus.FRESH} and not outcome.missing:
                    # it holds as long as the answers it was made on
                    used = [memberships[m].expires for m in needs.memberships(custom)]
                    if needs.user_details and detail is not None:
                        used.append(detail.expires)
                    expires = self._decisions.put(cache_key, decision, min(used, default=math.inf))
            plan.results[key] = decision
            plan.expires = min(plan.expires, expires)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(DECIDED, key, self._who(visitor), decision.to_dict(details=True))
        return events

    @staticmethod
    def _details(
        plan: Plan, key: str, outcome: Outcome, memberships: Mapping[MembershipKey, Answer[bool]]
    ) -> DecisionDetails:
        index = plan.index
        rules = index.rules.get(key) if index is not None else None
        if index is None or rules is None:
            return NO_DETAILS
        return rules.details(outcome, memberships, index.revision)

    def _evaluate(self, key: str, visitor: Visitor, answers: Answers) -> Outcome:
        """One flag, natively where the evaluator covers it, else (or in shadow) by the SDK."""
        context = visitor.context or {}
        native = self._native
        if native is None or key not in native.flags:
            return self._sdk.evaluate(key, context, answers)
        if self.config.evaluation == "shadow":
            return self._shadow(key, visitor, native, answers)
        with self._usage_lock:
            usage, self._usage_meta = self._usage_meta, None
        try:
            mine = native.evaluate(key, context, answers, usage_meta=usage)
        except Fallback as why:
            logger.debug(FELL_BACK, key, self._who(visitor), why)
            mine = self._sdk.evaluate(key, context, answers)
        if usage is not None and not mine.events:  # no impression took it: the next one will
            with self._usage_lock:
                self._usage_meta = self._usage_meta or usage
        return mine

    def _shadow(
        self, key: str, visitor: Visitor, native: NativeSettings, answers: Answers
    ) -> Outcome:
        """The SDK decides and sends; the native evaluator runs beside it, differences logged."""
        context = visitor.context or {}
        outcome = self._sdk.evaluate(key, context, answers)
        try:
            mine = native.evaluate(key, context, answers)
        except Fallback:
            return outcome
        theirs, ours = _shown_all(outcome), _shown_all(mine)
        if outcome.error or theirs != ours:
            logger.warning(SHADOW_DIFFERS, key, self._who(visitor), theirs, ours)
        return outcome

    def _who(self, visitor: Visitor) -> str:
        return short_hash(visitor.user_id or "", key=self.config.log_key)


def _shown_all(outcome: Outcome) -> tuple[Any, ...]:
    """What a shadow run compares: enabled, variables, and what each impression says (without
    its timestamps, random number and usage block)."""
    shown = []
    for event in outcome.events:
        props = event.body.get("d", {}).get("event", {}).get("props", {})
        shown.append((event.query.get("en"), props.get("id"), props.get("variation")))
    return (outcome.enabled, dict(outcome.variables), shown)
