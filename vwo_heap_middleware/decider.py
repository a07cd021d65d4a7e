"""One ``decide`` call, planned and finished, with no I/O: the engine does the lookups between.

``load`` gives the SDK new settings and compiles them for the native evaluator. ``plan`` answers
what overrides and the decision cache know, and says which gateway answers the rest needs;
``finish`` decides the rest on the answers looked up (natively where it can, else by the SDK),
caching decisions made on fresh answers, and returns the events to send.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .config import Config
from .decision import NO_DETAILS, FlagDecision, Reason
from .evaluation import overrides
from .evaluation.caches import DecisionCache
from .evaluation.flag_index import FlagIndex, FlagNeeds
from .evaluation.native import Fallback, NativeSettings, Traced
from .evaluation.outcome import (
    Answer,
    Answers,
    AnswerStatus,
    DetailsKey,
    Event,
    LookedUp,
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
EVALUATED = frozenset({Reason.TARGETED, Reason.NOT_TARGETED})  # decisions a cache may keep


@dataclass
class Plan:
    """One ``decide`` call (``keys``): what overrides and the cache answered, and what the rest
    needs (``memberships``, ``details``) before ``finish``."""

    deadline: float
    index: FlagIndex | None = None  # the settings decided on (None: not ready)
    keys: list[str] = field(default_factory=list)
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
        self,
        index: FlagIndex | None,
        visitor: Visitor,
        keys: list[str],
        deadline: float,
        cached: bool = True,
        expires: float = math.inf,
    ) -> Plan:
        """Answer what overrides and the cache know (``cached=False``: not the cache, the user
        id is being looked up); say what the rest needs. ``expires``: when the id stops holding."""
        plan = Plan(deadline, index, keys, expires=expires)
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
            found = self._decisions.lookup(cache_key) if cached else None
            if found is not None:
                plan.results[key], expires = found
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
        inputs = LookedUp.of(memberships, detail)
        custom = (visitor.context or {}).get("custom_variables", {})
        events: list[Event] = []
        for key, (needs, cache_key) in plan.todo.items():
            decision, outcome = self._decide(plan.index, key, needs, visitor, inputs)
            events += outcome.events
            expires = -math.inf
            if decision.reason in EVALUATED and inputs.fresh and not outcome.missing:
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

    def explain(
        self, index: FlagIndex, visitor: Visitor, key: str, inputs: LookedUp
    ) -> tuple[FlagDecision, list[Traced] | None]:
        """Decide ``key`` as ``finish`` would, recording the native evaluator's steps (None: the
        SDK decided); nothing cached, no events returned (an explanation sends no impression)."""
        trace: list[Traced] = []
        decision, outcome = self._decide(index, key, index.flags[key], visitor, inputs, trace)
        return decision, trace if outcome.evaluator == "native" else None

    def _decide(
        self,
        index: FlagIndex | None,
        key: str,
        needs: FlagNeeds,
        visitor: Visitor,
        inputs: LookedUp,
        trace: list[Traced] | None = None,
    ) -> tuple[FlagDecision, Outcome]:
        """One flag on the answers: the decision, and the outcome it was made from."""
        answers = inputs.with_details if needs.user_details else inputs.without_details
        outcome = self._evaluate(key, visitor, answers, trace)
        if outcome.error:
            return self._default(key, Reason.ERROR), outcome
        details = index.details(key, outcome, inputs.memberships) if index else NO_DETAILS
        if outcome.missing and not outcome.enabled:
            timed_out = AnswerStatus.TIMEOUT in inputs.statuses
            default = self._default(key, Reason.TIMEOUT if timed_out else Reason.GATEWAY_ERROR)
            return replace(default, details=details), outcome  # what was unknown
        reason = Reason.TARGETED if outcome.enabled else Reason.NOT_TARGETED
        decision = FlagDecision(
            key,
            outcome.enabled,
            outcome.variables,
            reason,
            inputs.stale,
            outcome.evaluator,
            details,
        )
        return decision, outcome

    def _evaluate(
        self, key: str, visitor: Visitor, answers: Answers, trace: list[Traced] | None = None
    ) -> Outcome:
        """One flag, natively where the evaluator covers it, else (or in shadow) by the SDK.
        ``trace``: an explanation's (its impressions are not sent: no usage block on them)."""
        context = visitor.context or {}
        native = self._native
        if native is None or key not in native.flags:
            return self._sdk.evaluate(key, context, answers)
        if self.config.evaluation == "shadow":
            return self._shadow(key, visitor, native, answers)
        usage = None
        if trace is None:
            with self._usage_lock:
                usage, self._usage_meta = self._usage_meta, None
        try:
            mine = native.evaluate(key, context, answers, usage_meta=usage, trace=trace)
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
        theirs, ours = outcome.compared(), mine.compared()
        if outcome.error or theirs != ours:
            logger.warning(SHADOW_DIFFERS, key, self._who(visitor), theirs, ours)
        return outcome

    def _who(self, visitor: Visitor) -> str:
        return short_hash(visitor.user_id or "", key=self.config.log_key)
