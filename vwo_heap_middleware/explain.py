"""Why a visitor gets a flag: VWO's rules walked in the order VWO walks them, each check with
the value it compared and what it gave (``FlagEngine.explain``, ``vwo-heap explain``).

The walk is recorded by the evaluator that decides (the native one, ``trace=``), so the verdict
is the engine's own; a flag the VWO SDK decides gets its verdict and details, and the reason the
native evaluator leaves it to the SDK, but no walk.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .decider import Decider
from .decision import RULE_TYPES, FlagDecision, Reason
from .evaluation import overrides
from .evaluation.details import FlagRules, Rule, segment_answer
from .evaluation.flag_index import INLIST, FlagIndex, membership_value
from .evaluation.native import AB, Traced
from .evaluation.outcome import Answer, LookedUp, MembershipKey
from .evaluation.segments import Memberships, Unsupported, compile_segment
from .gateway.lookups import GatewayLookups
from .visitor import Visitor


@dataclass(frozen=True, slots=True)
class Check:
    """One line of a rule's walk: what was checked, and whether it held."""

    text: str
    passed: bool
    depth: int = 0


@dataclass(frozen=True, slots=True)
class RuleWalk:
    """One rule: its place and key, its type (``rollout``, ``ab_test``, ``personalize``), the
    checks made, and what the rule gave."""

    index: int | None
    key: str | None
    type: str
    campaign_key: str | None
    checks: tuple[Check, ...]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "key": self.key,
            "type": self.type,
            "campaign_key": self.campaign_key,
            "checks": [{"text": c.text, "passed": c.passed, "depth": c.depth} for c in self.checks],
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Explanation:
    """Why flag ``key`` is ``decision`` for this visitor: the ``rules`` walked (empty when the
    SDK decided or nothing was evaluated; ``note`` says why), and the context evaluated."""

    key: str
    decision: FlagDecision
    rules: tuple[RuleWalk, ...] = ()
    note: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    alias: str | None = None  # the user id the context's id stands for (VWO user aliasing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flag": self.key,
            "decision": self.decision.to_dict(details=True),
            "rules": [rule.to_dict() for rule in self.rules],
            "note": self.note,
            "context": dict(self.context),
            "alias_of": self.alias,
        }

    def lines(self) -> list[str]:
        """The explanation as text, one line per check."""
        decision, details = self.decision, self.decision.details
        state = "ON" if decision.enabled else "OFF"
        out = [f"{self.key}: {state} ({decision.reason.value})"]
        if self.context:
            custom = self.context.get("custom_variables") or {}
            out.append(f"  user id {self.context.get('id')!r}, custom variables {custom!r}")
        if self.alias is not None:
            out.append(f"  the user id came through an alias: VWO links {self.alias!r} to it")
        if self.note:
            out.append(f"  {self.note}")
        for rule in self.rules:
            out.append(f"  rule {_rule_name(rule)}")
            for check in rule.checks:
                mark = "yes" if check.passed else "no "
                out.append(f"    {'  ' * check.depth}[{mark}] {check.text}")
            out.append(f"    => {rule.verdict}")
        if details.variation_name is not None:
            out.append(f"  variation {details.variation_name!r} (id {details.variation_id})")
        if decision.variables:
            out.append(f"  variables {dict(decision.variables)!r}")
        if details.revision:
            out.append(f"  settings revision {details.revision}, evaluated by {details.evaluator}")
        return out


def explain(
    decider: Decider,
    lookups: GatewayLookups,
    index: FlagIndex | None,
    key: str,
    visitor: Visitor,
    timeout: float | None = None,
) -> Explanation:
    """``FlagEngine.explain``: look up what the flag's rules need (cached answers count, as
    for a request), decide it with the evaluator recording its steps, and walk them."""
    context = dict(visitor.context or {})
    forced = overrides.current()
    if key in forced:
        return Explanation(key, forced[key], note="set by override_flags", context=context)
    if index is None:
        decision = decider.defaults([key], Reason.NOT_READY)[key]
        return Explanation(key, decision, note="no VWO settings loaded yet")
    if key not in index.flags:
        decision = decider.defaults([key], Reason.UNKNOWN_FLAG)[key]
        known = ", ".join(sorted(index.flags)) or "none"
        close = difflib.get_close_matches(key, sorted(index.flags), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        note = f"the settings have no such flag ({hint}they have {known})"
        return Explanation(key, decision, note=note)
    wait = decider.config.evaluation_timeout if timeout is None else timeout
    visitor = lookups.links.waited(visitor, wait)  # the id VWO knows them by (aliasing)
    context = dict(visitor.context or {})
    if visitor.context is None:
        decision = decider.defaults([key], Reason.NO_USER)[key]
        return Explanation(key, decision, note="no Heap identity or user id: nothing to evaluate")
    needs = index.flags[key]
    facts = (context.get("user_agent"), context.get("ip_address"))
    asked = facts if needs.user_details and any(facts) else None
    pending = lookups.begin(needs.memberships(context["custom_variables"]), asked)
    pending.wait(wait)
    memberships, details = pending.finish()
    detail = details.get(asked) if asked else None
    decision, trace = decider.explain(index, visitor, key, LookedUp.of(memberships, detail))
    if trace is None:
        why = decider.by_sdk.get(key, "this call's context")
        note = f"decided by the VWO SDK (the native evaluator leaves it: {why}); no rule walk"
        return Explanation(key, decision, note=note, context=context, alias=visitor.aliased_from)
    rules = walk(trace, index.rules.get(key) or FlagRules({}), memberships)
    return Explanation(key, decision, rules, context=context, alias=visitor.aliased_from)


def walk(
    trace: list[Traced],
    rules: FlagRules,
    memberships: Mapping[MembershipKey, Answer[bool]],
) -> tuple[RuleWalk, ...]:
    """The recorded steps as rule walks, in VWO's order; rules never reached are listed last."""
    known = {key: a.value if a.known else None for key, a in memberships.items()}
    by_rule: dict[str, list[Traced]] = {}
    for step in trace:
        by_rule.setdefault(str(step.rule.campaign_id), []).append(step)
    walks = [
        _rule_walk(rules.rules.get(campaign), steps, memberships, known)
        for campaign, steps in by_rule.items()
    ]
    for campaign, rule in sorted(rules.rules.items(), key=lambda item: item[1].index):
        if campaign not in by_rule:
            kind = RULE_TYPES.get(rule.type, rule.type)
            walks.append(RuleWalk(rule.index, rule.key, kind, rule.campaign_key, (), "not reached"))
    return tuple(walks)


def _rule_walk(
    rule: Rule | None,
    steps: list[Traced],
    memberships: Mapping[MembershipKey, Answer[bool]],
    known: Mapping[MembershipKey, bool | None],
) -> RuleWalk:
    checks: list[Check] = []
    verdict = "no decision"
    for step in steps:
        if step.stage == "whitelist":
            chosen = step.variation
            name = f"variation {chosen.name!r}" if chosen is not None else "none"
            checks.append(Check(f"whitelisting: {name}", step.passed))
            if chosen is not None:
                verdict = f"gave variation {chosen.name!r} (whitelisted)"
            for variation in step.rule.variations:
                if variation.whitelist_dsl is not None:
                    checks += segment_checks(
                        variation.whitelist_dsl, step.properties or {}, memberships, known, 1
                    )
        elif step.stage == "segment":
            dsl = step.rule.segment_dsl
            checks.append(
                Check("segment: " + ("matches" if step.passed else "does not match"), step.passed)
            )
            checks += segment_checks(dsl, step.properties or {}, memberships, known, 1)
            verdict = "in the segment" if step.passed else "not in the segment"
        elif step.stage == "traffic":
            checks.append(
                Check(
                    f"traffic: bucket {step.value} of 100, the rule takes {step.rule.traffic}",
                    step.passed,
                )
            )
            if not step.passed:
                verdict = "in the segment, outside the rule's traffic"
            elif step.rule.type != AB:
                variation = step.rule.variations[0]
                verdict = f"gave variation {variation.name!r}"
        elif step.stage == "variation":
            chosen = step.variation
            ranges = ", ".join(
                f"{v.name!r} {v.start}-{v.end}" for v in step.rule.variations if v.start > 0
            )
            name = repr(chosen.name) if chosen is not None else "none"
            checks.append(
                Check(f"variation: bucket {step.value} of 10000 in {ranges}: {name}", step.passed)
            )
            verdict = f"gave variation {name} (in the experiment)" if chosen else "no variation"
    kind = rule.type if rule else steps[0].rule.type
    return RuleWalk(
        rule.index if rule else None,
        rule.key if rule else None,
        RULE_TYPES.get(kind, kind),
        rule.campaign_key if rule else None,
        tuple(checks),
        verdict,
    )


def segment_checks(
    dsl: Any,
    properties: Mapping[str, Any],
    memberships: Mapping[MembershipKey, Answer[bool]],
    known: Mapping[MembershipKey, bool | None],
    depth: int = 0,
) -> list[Check]:
    """A segment DSL node by node: each with what it compared and whether it held (each node
    compiled and run as the evaluator runs it)."""
    if not isinstance(dsl, dict) or not dsl:
        return [Check("everyone (no conditions)", True, depth)]
    try:
        passed = compile_segment(dsl)(properties, Memberships(known))
    except Unsupported as why:
        return [Check(f"a condition this package does not read: {why}", False, depth)]
    except Exception as error:  # a node the evaluation never reached (and/or stop early)
        return [Check(f"{_brief(dsl)}: cannot be compared ({error!r})", False, depth)]
    operator = next(iter(dsl))
    value = dsl[operator]
    if operator in ("and", "or", "not"):
        children = value if isinstance(value, list) else [value]
        checks = [Check(f"{operator}:", passed, depth)]
        for child in children:
            checks += segment_checks(child, properties, memberships, known, depth + 1)
        return checks
    if operator == "custom_variable" and isinstance(value, dict) and value:
        name, operand = next(iter(value.items()))
        if name not in properties:
            return [Check(f"custom variable {name!r} is not set ({operand})", passed, depth)]
        given = properties[name]
        match = INLIST.search(operand) if isinstance(operand, str) else None
        if match is not None:
            list_id = match.group(1)
            answer = segment_answer(memberships.get((list_id, membership_value(given))))
            text = f"custom variable {name!r} = {given!r} in Heap segment {list_id!r}: {answer}"
            return [Check(text, passed, depth)]
        return [Check(f"custom variable {name!r} = {given!r} against {operand!r}", passed, depth)]
    if operator == "user":
        who = properties.get("_vwoUserId")
        return [Check(f"user id {who!r} among {value!r}", passed, depth)]
    return [Check(f"{operator} {value!r}", passed, depth)]


def _rule_name(rule: RuleWalk) -> str:
    place = f"#{rule.index + 1} " if rule.index is not None else ""
    return f"{place}{rule.key or rule.campaign_key} ({rule.type.replace('_', ' ')})"


def _brief(dsl: Any) -> str:
    text = repr(dsl)
    return text if len(text) <= 80 else text[:77] + "..."
