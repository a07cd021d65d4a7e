"""One ``decide`` call, planned and finished: the engine's decisions over lookups, the native
evaluator and the SDK.

``Decider.load`` gives the SDK new settings and compiles them for the native evaluator.
``Decider.plan`` answers what overrides and the decision cache know and starts the gateway
lookups the rest needs; the engine waits on them within the request's budget; ``finish`` turns
the answers (or their absence) into decisions, each flag evaluated natively where it can be
(``Config.evaluation``) and by the SDK otherwise, caching the ones made on fresh answers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import overrides, vwo_sdk
from .config import Config
from .decision import DecisionCache, FlagDecision, Reason
from .events import Event
from .flag_index import FlagIndex, FlagNeeds
from .lookups import AnswerStatus, DetailsKey, GatewayLookups, Pending
from .native_evaluator import Fallback, NativeOutcome, NativeSettings
from .observers import Observer
from .returning import Remembered, ReturningVisitors
from .visitor import RequestFacts, Visitor, short_hash

logger = logging.getLogger("vwo_heap_middleware")

NATIVE_OFF = "native evaluation is off: %s; the VWO SDK decides every flag"
BY_SDK = "flag %r is decided by the VWO SDK: the native evaluator does not cover %s"
FELL_BACK = "flag %r for user %s: decided by the VWO SDK (%s)"
SHADOW_DIFFERS = "shadow evaluation: flag %r for user %s differs: SDK %s, native %s"
DECIDED = "flag %s: %s for user %s"


@dataclass
class Plan:
    """One ``decide`` call: what the caches answered, and the lookups the rest waits for."""

    deadline: float
    revision: str | None = None  # of the settings decided on (None: not ready)
    results: dict[str, FlagDecision] = field(default_factory=dict)
    todo: dict[str, tuple[FlagNeeds, tuple[Any, ...]]] = field(default_factory=dict)
    details: DetailsKey | None = None
    pending: Pending | None = None
    cached: int = 0  # results that came from the decision cache
    # When the first of the results stops holding (``time.monotonic()``); -inf when one of
    # them must not be reused (an override, a default for a failure, a stale answer).
    expires: float = math.inf

    def left(self) -> float:
        """Seconds of the budget still left to wait for lookups."""
        return max(self.deadline - time.monotonic(), 0.0)


class Decider:
    def __init__(
        self,
        config: Config,
        lookups: GatewayLookups,
        sdk: vwo_sdk.VwoSdk,
        emit: Callable[[Event], None],
    ) -> None:
        self.config = config
        self._lookups = lookups
        self._sdk = sdk
        self._decisions = DecisionCache(config.cache_size, config.decision_ttl)
        self._returning = ReturningVisitors(max(config.cache_size // 5, 1))  # the frequent ones
        self._recalls = not config.hooks  # else visitors are not a function of facts alone
        self._emit = emit  # the engine's event spool
        self.observers: Observer = Observer()
        self._native: NativeSettings | None = None
        self.by_sdk: Mapping[str, str] = {}  # flags the SDK decides, and why

    def load(self, settings: dict[str, Any]) -> None:
        """New settings for the SDK (``SettingsRejected`` if it refuses them), then for the
        native evaluator unless ``evaluation="sdk"`` or this SDK is not one it was proven on."""
        self._sdk.load(settings)
        self.forget()
        self._native, self.by_sdk = None, {}
        if self.config.evaluation == "sdk":
            return
        problem = self._sdk.native_problem()
        if problem is not None:  # Redis storage is a choice; an unproven SDK is a surprise
            level = logging.INFO if self._lookups.shared is not None else logging.WARNING
            logger.log(level, NATIVE_OFF, problem)
            self.by_sdk = {str(f.get("key")): problem for f in settings.get("features") or []}
            return
        native = NativeSettings(settings, self._sdk.native_facts())
        for key, why in native.unsupported.items():
            logger.info(BY_SDK, key, why)
        self._native, self.by_sdk = native, MappingProxyType(dict(native.unsupported))

    def forget(self) -> None:
        """New settings, or a forked child: no decision made before holds."""
        self._decisions.reset()
        self._returning.reset()

    def stats(self) -> dict[str, int]:
        return {
            "cached_decisions": len(self._decisions),
            "returning_visitors": len(self._returning),
        }

    def readiness(self) -> dict[str, Any]:
        return {
            "sdk_version": vwo_sdk.sdk_version(),
            "sdk_patches": list(vwo_sdk.installed()),
            "evaluation": self.config.evaluation,
            "decided_by_sdk": dict(self.by_sdk),
        }

    def recall(
        self, index: FlagIndex | None, facts: RequestFacts, keys: Iterable[str]
    ) -> tuple[Visitor, dict[str, FlagDecision]] | None:
        """A returning visitor's decisions, by the request's facts (see ``returning``)."""
        if not self._recalls or index is None or overrides.current():
            return None
        entry = self._returning.recall(facts, index.revision, keys)
        if entry is None:
            return None
        results = {key: entry.decisions[key] for key in keys}
        self._report(entry.visitor, results, len(results))
        return entry.visitor, results

    def done(
        self, plan: Plan, visitor: Visitor, facts: RequestFacts | None
    ) -> dict[str, FlagDecision]:
        """Tell the observers (and the debug log); remember the decisions by ``facts``."""
        self._report(visitor, plan.results, plan.cached)
        if (
            facts is not None
            and self._recalls
            and plan.revision is not None
            and plan.expires > time.monotonic()
        ):
            entry = Remembered(plan.revision, visitor, dict(plan.results), plan.expires)
            self._returning.remember(facts, entry)
        return plan.results

    def _report(self, visitor: Visitor, results: Mapping[str, FlagDecision], cached: int) -> None:
        if self.observers:
            self.observers.decided(results, cached)
        if logger.isEnabledFor(logging.DEBUG):
            user = short_hash(visitor.user_id or "", key=self.config.log_key)
            for d in results.values():
                extra = {"flag_key": d.key, "flag_reason": d.reason.value, "user_hash": user}
                logger.debug(DECIDED, d.key, d.reason.value, user, extra=extra)

    def plan(
        self,
        index: FlagIndex | None,
        visitor: Visitor,
        keys: list[str],
        deadline: float,
        on_loop: bool = False,
    ) -> Plan:
        """Answer what overrides and the cache know; start the lookups the rest needs (from the
        running event loop when ``on_loop``). ``index`` is None while the engine is not ready."""
        plan = Plan(deadline, index.revision if index else None)
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
        base = (index.revision, visitor.user_id, tuple(sorted(custom.items())))
        for key in keys:
            needs = index.flags.get(key)
            if needs is None:
                plan.results[key] = self._default(key, Reason.UNKNOWN_FLAG)
                continue
            cache_key = (key, *base, facts if needs.request_facts else None)
            cached = self._decisions.lookup(cache_key)
            if cached is not None:
                plan.results[key], expires = cached
                plan.expires = min(plan.expires, expires)
                plan.cached += 1
            else:
                plan.todo[key] = (needs, cache_key)
        if plan.todo:
            memberships = {m for needs, _ in plan.todo.values() for m in needs.memberships(custom)}
            if any(needs.user_details for needs, _ in plan.todo.values()) and any(facts):
                plan.details = facts
            plan.pending = self._lookups.begin(memberships, plan.details, on_loop)
        return plan

    def _default(self, key: str, reason: Reason) -> FlagDecision:
        return FlagDecision.default(key, reason, self.config.default_for(key))

    def defaults(self, keys: Iterable[str], reason: Reason) -> dict[str, FlagDecision]:
        return {key: self._default(key, reason) for key in keys}

    def finish(self, plan: Plan, visitor: Visitor) -> None:
        """Decide what the cache did not know, from the lookups' answers (waited for or not)."""
        assert plan.pending is not None
        memberships, details = plan.pending.finish()
        detail = details.get(plan.details) if plan.details else None
        known = {key: a.value if a.known else None for key, a in memberships.items()}
        statuses = {answer.status for answer in memberships.values()}
        if detail is not None:
            statuses.add(detail.status)
        stale = AnswerStatus.STALE in statuses
        custom = (visitor.context or {}).get("custom_variables", {})
        with_details = vwo_sdk.Answers(
            known,
            user_details=detail.value if detail is not None and detail.known else None,
            user_details_missing=detail is not None and not detail.known,
        )
        without_details = vwo_sdk.Answers(known)
        for key, (needs, cache_key) in plan.todo.items():
            answers = with_details if needs.user_details else without_details
            outcome, evaluator = self._evaluate(key, visitor, answers)
            expires = -math.inf
            if outcome.error:
                decision = self._default(key, Reason.ERROR)
            elif outcome.missing and not outcome.enabled:
                timed_out = AnswerStatus.TIMEOUT in statuses
                decision = self._default(key, Reason.TIMEOUT if timed_out else Reason.GATEWAY_ERROR)
            else:
                reason = Reason.TARGETED if outcome.enabled else Reason.NOT_TARGETED
                decision = FlagDecision(
                    key, outcome.enabled, outcome.variables, reason, stale, evaluator
                )
                if statuses <= {AnswerStatus.FRESH} and not outcome.missing:
                    # it holds as long as the answers it was made on
                    used = [memberships[m].expires for m in needs.memberships(custom)]
                    if needs.user_details and detail is not None:
                        used.append(detail.expires)
                    expires = self._decisions.put(cache_key, decision, min(used, default=math.inf))
            plan.results[key] = decision
            plan.expires = min(plan.expires, expires)

    def _evaluate(
        self, key: str, visitor: Visitor, answers: vwo_sdk.Answers
    ) -> tuple[vwo_sdk.Outcome, str]:
        """One flag, natively where the evaluator covers it, else (or in shadow) by the SDK."""
        context, user = visitor.context or {}, visitor.user_id or ""
        native = self._native
        if native is None or key not in native.flags:
            return self._sdk.evaluate(key, context, answers, user), "sdk"
        shadow = self.config.evaluation == "shadow"
        try:
            mine = native.evaluate(key, context, answers.memberships, usage_meta=not shadow)
        except Fallback as why:
            logger.debug(FELL_BACK, key, short_hash(user, key=self.config.log_key), why)
            return self._sdk.evaluate(key, context, answers, user), "sdk"
        if shadow:
            outcome = self._sdk.evaluate(key, context, answers, user)
            theirs, ours = _shown_all(outcome), _shown_all(mine)
            if outcome.error or theirs != ours:
                who = short_hash(user, key=self.config.log_key)
                logger.warning(SHADOW_DIFFERS, key, who, theirs, ours)
            return outcome, "sdk"
        for event in mine.events:
            self._emit(event)
        return vwo_sdk.Outcome(mine.enabled, mine.variables, mine.missing), "native"


def _shown_all(outcome: vwo_sdk.Outcome | NativeOutcome) -> tuple[Any, ...]:
    """What a shadow run compares: enabled, variables, and what each impression says."""
    return (outcome.enabled, dict(outcome.variables), [_shown(e) for e in outcome.events])


def _shown(event: Event) -> tuple[Any, ...]:
    """What an impression says, without its timestamps, random number and usage block."""
    props = event.body.get("d", {}).get("event", {}).get("props", {})
    return (event.query.get("en"), props.get("id"), props.get("variation"))
