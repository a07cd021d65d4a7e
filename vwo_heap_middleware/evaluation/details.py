"""What a decision's details name: each flag's rules as VWO's settings describe them (read once
per revision), and the details of one evaluated outcome, for the native evaluator and the SDK
alike (both say which campaign and variation they showed through their impressions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..decision import RULE_TYPES, DecisionDetails, SegmentAnswer
from .outcome import Answer, AnswerStatus, MembershipKey, Outcome

AB_TEST = "FLAG_TESTING"


@dataclass(frozen=True, slots=True)
class Rule:
    """One of a flag's rules: its place, key and type, its campaign, its variations' names."""

    index: int
    key: str | None
    type: str
    campaign_id: Any
    campaign_key: str | None
    variations: Mapping[str, tuple[Any, str | None]]  # str(variation id) -> (id, name)


@dataclass(frozen=True, slots=True)
class FlagRules:
    """A flag's rules by campaign id (as a string), its impact campaign's id, its own id."""

    rules: Mapping[str, Rule]
    impact: str | None = None
    feature_id: Any = None

    @classmethod
    def read(cls, feature: Mapping[str, Any], campaigns: Mapping[str, Any]) -> FlagRules:
        """From a settings ``feature`` and the settings' campaigns by id (as a string)."""
        rules: dict[str, Rule] = {}
        for index, link in enumerate(feature.get("rules") or []):
            campaign = (
                campaigns.get(str(link.get("campaignId"))) if isinstance(link, dict) else None
            )
            if not isinstance(campaign, dict):
                continue
            variations = {
                str(v.get("id")): (v.get("id"), _text(v.get("name")))
                for v in campaign.get("variations") or []
                if isinstance(v, dict)
            }
            rules[str(campaign.get("id"))] = Rule(
                index,
                _text(link.get("ruleKey")),
                str(campaign.get("type")),
                campaign.get("id"),
                _text(campaign.get("key")),
                MappingProxyType(variations),
            )
        impact = (feature.get("impactCampaign") or {}).get("campaignId")
        impact_id = None if impact is None else str(impact)
        return cls(MappingProxyType(rules), impact_id, feature.get("id"))

    def details(
        self,
        outcome: Outcome,
        memberships: Mapping[MembershipKey, Answer[bool]],
        revision: str | None,
    ) -> DecisionDetails:
        """The details of ``outcome``: the rule of the last campaign it showed (its impact
        campaign aside), and the answer of each segment it consulted."""
        segments = segment_answers(outcome.asked, memberships)
        for event in reversed(outcome.events):
            shown = event.shown
            if shown is None or shown[1] == self.impact:
                continue
            rule = self.rules.get(shown[1])
            if rule is None:
                break
            variation_id, name = rule.variations.get(shown[2], (shown[2], None))
            return DecisionDetails(
                rule.key,
                RULE_TYPES.get(rule.type, rule.type),
                rule.index,
                rule.campaign_id,
                rule.campaign_key,
                variation_id,
                name,
                rule.type == AB_TEST,
                segments,
                revision,
                outcome.evaluator,
                feature_id=self.feature_id,
            )
        return DecisionDetails(
            segments=segments,
            revision=revision,
            evaluator=outcome.evaluator,
            feature_id=self.feature_id,
        )


def segment_answers(
    asked: tuple[MembershipKey, ...], memberships: Mapping[MembershipKey, Answer[bool]]
) -> tuple[tuple[str, SegmentAnswer], ...]:
    """Each attribute list consulted, once, with what its answer was (never the value asked)."""
    seen: dict[str, SegmentAnswer] = {}
    for key in asked:
        if key[0] not in seen:
            seen[key[0]] = segment_answer(memberships.get(key))
    return tuple(seen.items())


def segment_answer(answer: Answer[bool] | None) -> SegmentAnswer:
    if answer is None or not answer.known:
        return SegmentAnswer.UNKNOWN
    if answer.status is AnswerStatus.STALE:
        return SegmentAnswer.STALE
    return SegmentAnswer.MEMBER if answer.value else SegmentAnswer.NOT_MEMBER


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
