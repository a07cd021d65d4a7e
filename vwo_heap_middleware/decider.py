"""One ``decide`` call, planned and finished: the engine's decisions over lookups and the SDK.

``Decider.plan`` answers what overrides and the decision cache know and starts the gateway
lookups the rest needs; the engine waits on them within the request's budget; ``finish`` turns
the answers (or their absence) and the SDK's outcomes into decisions, caching the ones made on
fresh answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import overrides, vwo_sdk
from .config import Config
from .decision import DecisionCache, FlagDecision, Reason
from .flag_index import FlagIndex, FlagNeeds
from .lookups import AnswerStatus, DetailsKey, GatewayLookups, Pending
from .visitor import Visitor


@dataclass
class Plan:
    """One ``decide`` call: what the caches answered, and the lookups the rest waits for."""

    deadline: float
    results: dict[str, FlagDecision] = field(default_factory=dict)
    todo: dict[str, tuple[FlagNeeds, tuple[Any, ...]]] = field(default_factory=dict)
    details: DetailsKey | None = None
    pending: Pending | None = None
    cached: int = 0  # results that came from the decision cache

    def left(self) -> float:
        """Seconds of the budget still left to wait for lookups."""
        return max(self.deadline - time.monotonic(), 0.0)


class Decider:
    def __init__(
        self,
        config: Config,
        lookups: GatewayLookups,
        sdk: vwo_sdk.VwoSdk,
        decisions: DecisionCache,
    ) -> None:
        self.config = config
        self._lookups = lookups
        self._sdk = sdk
        self._decisions = decisions

    def plan(
        self, index: FlagIndex | None, visitor: Visitor, keys: list[str], deadline: float
    ) -> Plan:
        """Answer what overrides and the cache know; start the lookups the rest needs.
        ``index`` is None while the engine is not ready."""
        plan = Plan(deadline)
        forced = overrides.current()
        if forced:
            plan.results = {key: forced[key] for key in keys if key in forced}
            keys = [key for key in keys if key not in forced]
        context = visitor.context
        if index is None:
            plan.results.update(self.defaults(keys, Reason.NOT_READY))
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
            cached = self._decisions.get(cache_key)
            if cached is not None:
                plan.results[key] = cached
                plan.cached += 1
            else:
                plan.todo[key] = (needs, cache_key)
        if plan.todo:
            memberships = {m for needs, _ in plan.todo.values() for m in needs.memberships(custom)}
            if any(needs.user_details for needs, _ in plan.todo.values()) and any(facts):
                plan.details = facts
            plan.pending = self._lookups.begin(memberships, plan.details)
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
        with_details = vwo_sdk.Answers(
            known,
            user_details=detail.value if detail is not None and detail.known else None,
            user_details_missing=detail is not None and not detail.known,
        )
        without_details = vwo_sdk.Answers(known)
        for key, (needs, cache_key) in plan.todo.items():
            answers = with_details if needs.user_details else without_details
            outcome = self._sdk.evaluate(key, visitor.context or {}, answers, visitor.user_id or "")
            if outcome.error:
                decision = self._default(key, Reason.ERROR)
            elif outcome.missing and not outcome.enabled:
                timed_out = AnswerStatus.TIMEOUT in statuses
                decision = self._default(key, Reason.TIMEOUT if timed_out else Reason.GATEWAY_ERROR)
            else:
                reason = Reason.TARGETED if outcome.enabled else Reason.NOT_TARGETED
                decision = FlagDecision(key, outcome.enabled, outcome.variables, reason, stale)
                if statuses <= {AnswerStatus.FRESH} and not outcome.missing:
                    self._decisions.put(cache_key, decision)
            plan.results[key] = decision
