"""VWO flag decisions without the SDK: settings compiled once per revision, evaluated lock-free.

``NativeSettings(settings, sdk)`` reads VWO settings the way vwo-fme-python-sdk does and marks
each flag native or not: a flag using anything this package does not cover (mutually exclusive
groups, holdouts, usage tracking, debugger events, location and user-agent segments, malformed
segments) is left to the SDK as a whole, with the reason. ``evaluate`` decides a native flag for
a context with no lock, singleton or schema check, and builds the impressions the SDK would have
sent. Where the SDK would fail or log an error on a call, it raises ``Fallback`` and the caller
asks the SDK.

The semantics are copied from the SDK's source (``api/get_flag_api.py``,
``utils/decision_util.py``, ``services/campaign_decision_service.py``,
``packages/segmentation_evaluator``, ``utils/network_util.py``) and proven equal to it, case by
case, by ``tests/evaluation/test_native.py`` (the differential suite); they hold only for the SDK
releases listed in ``VERIFIED_SDKS``, checked at start-up.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from murmurhash import mrmr  # the SDK's own murmurhash (the mmh3 wheel crashes on surrogates)

from .impressions import VWO_NAMESPACE, Impressions, SdkFacts, uuid5_hex
from .outcome import NO_VARIABLES, Answers, Outcome
from .segments import Memberships, Segment, Unsupported, compile_segment

# SDK release -> whether its inlist defect (and so this project's patch) is present: the
# combinations the differential suite passed on. Native evaluation is off for any other.
VERIFIED_SDKS: Mapping[str, bool] = MappingProxyType({"1.65.0": True})

ROLLOUT, AB, PERSONALIZE = "FLAG_ROLLOUT", "FLAG_TESTING", "FLAG_PERSONALIZE"
CONTEXT_KEYS = frozenset(
    {"id", "custom_variables", "user_agent", "ip_address", "_vwo", "session_id", "bucketingSeed"}
)


@dataclass(frozen=True, slots=True)
class Traced:
    """One step of an evaluation, recorded for an explanation: ``rule``'s ``stage``
    (``segment``, ``traffic``, ``whitelist``, ``variation``) and whether it passed, with the
    bucket value, the variation chosen and the properties the segment was given."""

    rule: _Rule
    stage: str
    passed: bool
    value: int | None = None
    variation: _Variation | None = None
    properties: Mapping[str, Any] | None = None


class Fallback(Exception):
    """Call time: the SDK would fail or log an error on this call, so it answers it."""


# Bucketing, as decision_maker.py and campaign_util.py do it.


def bucket(key: str, max_value: int) -> int:
    """The SDK's bucket of ``key``: murmur3 (seed 1) scaled to 1..max_value."""
    ratio: float = (mrmr.hash(key, 1) & 0xFFFFFFFF) / (2**32)
    return math.floor(max_value * ratio + 1)


def _range_size(weight: Any) -> int:
    return min(math.ceil(weight * 100), 10000) if weight else 0


@dataclass(frozen=True, slots=True)
class _Variation:
    id: Any
    weight: Any
    variables: Mapping[str, Any]
    start: int
    end: int
    whitelist: Segment | None  # its segments, when whitelisting can pick it
    name: Any = None
    whitelist_dsl: Any = None


@dataclass(frozen=True, slots=True)
class _Rule:
    type: str
    campaign_id: Any
    salt: Any  # traffic bucketing: the campaign's, or the first variation's for rollouts
    traffic: Any
    user_list: bool
    segment: Segment
    variations: tuple[_Variation, ...]
    forced: bool  # whitelisting
    segment_dsl: Any = None  # the segment as the settings write it (for explanations)

    def seed(self, bucketing_id: str) -> str:
        return f"{self.salt}_{bucketing_id}" if self.salt else f"{self.campaign_id}_{bucketing_id}"


def _number(value: Any, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unsupported(f"{what} is not a number")
    return value


def _variables(variation: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({v["key"]: v["value"] for v in variation.get("variables", [])})


def _compile_rule(campaign: Mapping[str, Any], variation_id: Any) -> _Rule:
    kind = str(campaign.get("type"))
    raw = campaign.get("variations", [])
    ranges, allocated = [], 0
    for variation in raw:  # ranges over the whole campaign, before a rule narrows it
        size = _range_size(_number(variation.get("weight"), "a variation weight"))
        ranges.append((allocated + 1, allocated + size) if size else (-1, -1))
        allocated += size
    chosen = [i for i, v in enumerate(raw) if v.get("id") == variation_id]
    indices = chosen[:1] if variation_id is not None and chosen else range(len(raw))
    forced = kind == AB and bool(campaign.get("isForcedVariationEnabled", False))
    variations = []
    for i in indices:
        segments = raw[i].get("segments", {})
        wanted = forced and isinstance(segments, dict) and segments
        whitelist = compile_segment(segments) if wanted else None
        variations.append(
            _Variation(
                raw[i].get("id"),
                raw[i].get("weight"),
                _variables(raw[i]),
                *ranges[i],
                whitelist,
                raw[i].get("name"),
                segments if wanted else None,
            )
        )
    if kind == AB:
        segment, salt = campaign.get("segments", {}), campaign.get("salt")
        traffic = _number(campaign.get("percentTraffic"), "percentTraffic")
    elif variations:  # rollout and personalize: the first variation holds it all
        segment, salt = raw[indices[0]].get("segments", {}), raw[indices[0]].get("salt")
        traffic = variations[0].weight
    else:
        raise Unsupported(f"a {kind} rule with no variations")
    if not isinstance(segment, dict):
        raise Unsupported("segments that are not an object")
    return _Rule(
        kind,
        campaign["id"],
        salt,
        traffic,
        bool(campaign.get("isUserListEnabled", False)),
        compile_segment(segment),
        tuple(variations),
        forced,
        segment,
    )


@dataclass(frozen=True, slots=True)
class _Flag:
    rollouts: tuple[_Rule, ...]
    experiments: tuple[_Rule, ...]
    impact_campaign: Any  # its id, when the flag measures its impact


def _compile_flag(
    feature: Mapping[str, Any], campaigns: Mapping[Any, Any], groups: Mapping[str, Any]
) -> _Flag:
    if feature.get("isDebuggerEnabled", False):
        raise Unsupported("debugger events")
    rollouts: list[_Rule] = []
    experiments: list[_Rule] = []
    for link in feature["rules"]:
        campaign = campaigns.get(link["campaignId"])
        if campaign is None:
            continue  # the SDK skips a rule whose campaign is gone
        kind = campaign.get("type")
        if kind not in (ROLLOUT, AB, PERSONALIZE):
            continue
        grouped = str(campaign["id"])
        if any(key == grouped or key.startswith(grouped + "_") for key in groups):
            raise Unsupported("a mutually exclusive group")
        rule = _compile_rule(campaign, link.get("variationId"))
        (rollouts if kind == ROLLOUT else experiments).append(rule)
    impact = (feature.get("impactCampaign") or {}).get("campaignId")
    return _Flag(tuple(rollouts), tuple(experiments), impact)


class NativeSettings:
    """One settings revision, compiled: ``flags`` decided here, ``unsupported`` (key -> why)
    left to the SDK. An ``Evaluator``: pure, lock-free, no SDK call."""

    def __init__(self, settings: Mapping[str, Any], sdk: SdkFacts) -> None:
        self._account = settings["accountId"]  # bucketing and hashed user ids use the settings'
        self._settings_namespace = uuid.uuid5(VWO_NAMESPACE, str(self._account)).bytes
        web = bool(settings.get("isWebConnectivityEnabled", True))
        self._impressions = Impressions(sdk, web_connectivity=web)
        self.flags: dict[str, _Flag] = {}
        self.unsupported: dict[str, str] = {}
        everything = None
        if settings.get("holdouts"):
            everything = "holdouts"
        elif settings.get("isMAU", False):
            everything = "usage tracking (isMAU)"
        campaigns = {campaign["id"]: campaign for campaign in settings["campaigns"]}
        groups = settings.get("campaignGroups") or {}
        for feature in settings["features"]:
            key = feature["key"]
            if key in self.flags or key in self.unsupported:
                continue  # the SDK finds the first flag with a key
            try:
                if everything:
                    raise Unsupported(everything)
                self.flags[key] = _compile_flag(feature, campaigns, groups)
            except Unsupported as why:
                self.unsupported[key] = str(why)
            except Exception as error:  # settings the SDK took but this reading does not
                self.unsupported[key] = f"settings this evaluator cannot read ({error!r})"

    def evaluate(
        self,
        key: str,
        context: Mapping[str, Any],
        answers: Answers,
        *,
        usage_meta: Mapping[str, Any] | None = None,
        trace: list[Traced] | None = None,
    ) -> Outcome:
        """Decide native flag ``key`` as ``get_flag(key, context)`` would; ``Fallback`` when
        the SDK would fail or log an error instead. ``usage_meta``: the SDK's usage block, to
        ride on the first impression (the SDK sends it once after ``init``). ``trace``: a list
        to record each step in (``Traced``), for an explanation."""
        try:
            memberships = Memberships(answers.memberships)
            return self._evaluate(self.flags[key], context, memberships, usage_meta, trace)
        except Fallback:
            raise
        except Exception as error:
            raise Fallback(repr(error)) from error

    def _evaluate(
        self,
        flag: _Flag,
        context: Mapping[str, Any],
        call: Memberships,
        usage_meta: Mapping[str, Any] | None,
        trace: list[Traced] | None = None,
    ) -> Outcome:
        if not CONTEXT_KEYS.issuperset(context):
            raise Fallback("context keys this evaluator does not read")
        user_id = context.get("id")
        custom = context.get("custom_variables", {})
        if not isinstance(user_id, str) or not user_id or not isinstance(custom, dict):
            raise Fallback("a context the SDK refuses")
        seed = user_id
        if "bucketingSeed" in context:
            seed = context["bucketingSeed"]
            if not isinstance(seed, str) or not seed.strip():
                raise Fallback("a bucketing seed the SDK refuses (it logs an error)")
        hashed: list[str] = []

        def vwo_user_id(rule: _Rule) -> str:
            if not rule.user_list:
                return user_id
            if not hashed:
                hashed.append(uuid5_hex(self._settings_namespace, user_id))
            return hashed[0]

        shown: list[tuple[Any, Any]] = []  # (campaign id, variation id) impressions, in order
        enabled, variables = False, NO_VARIABLES
        check_experiments = not flag.rollouts
        for rule in flag.rollouts:
            properties = {**custom, "_vwoUserId": vwo_user_id(rule)}
            in_segment = rule.segment(properties, call)
            if trace is not None:
                trace.append(Traced(rule, "segment", in_segment, properties=properties))
            if in_segment:
                in_traffic = self._in_traffic(rule, seed)
                if trace is not None:
                    trace.append(
                        Traced(rule, "traffic", in_traffic, self.traffic_bucket(rule, seed))
                    )
                if in_traffic:  # the first rollout in segment is the only one
                    variation = rule.variations[0]
                    enabled, variables, check_experiments = True, variation.variables, True
                    shown.append((rule.campaign_id, variation.id))
                break
        if check_experiments:
            for rule in flag.experiments:
                value = vwo_user_id(rule)
                if rule.forced:
                    chosen = self._whitelisted(rule, {"_vwoUserId": value}, call, seed)
                    if trace is not None:
                        whitelisted = {"_vwoUserId": value}
                        trace.append(
                            Traced(rule, "whitelist", chosen is not None, None, chosen, whitelisted)
                        )
                    if chosen is not None:
                        enabled, variables = True, chosen.variables
                        shown.append((rule.campaign_id, chosen.id))
                        break
                properties = {**custom, "_vwoUserId": value}
                in_segment = rule.segment(properties, call)
                if trace is not None:
                    trace.append(Traced(rule, "segment", in_segment, properties=properties))
                if in_segment:
                    allocated = self._allocated(rule, seed)
                    if trace is not None:
                        in_traffic = self._in_traffic(rule, seed)
                        bucketed = self.traffic_bucket(rule, seed)
                        trace.append(Traced(rule, "traffic", in_traffic, bucketed))
                        if in_traffic and rule.type == AB:
                            value_ = self.variation_bucket(rule, seed)
                            trace.append(
                                Traced(rule, "variation", allocated is not None, value_, allocated)
                            )
                    if allocated is not None:
                        enabled, variables = True, allocated.variables
                        shown.append((rule.campaign_id, allocated.id))
                    break  # the first experiment in segment ends the search
        if flag.impact_campaign:
            shown.append((flag.impact_campaign, 2 if enabled else 1))
        events = self._impressions.make(context, user_id, shown, usage_meta) if shown else ()
        asked = tuple(call.asked)
        return Outcome(enabled, variables, events, call.missing, evaluator="native", asked=asked)

    @staticmethod
    def traffic_bucket(rule: _Rule, seed: str) -> int:
        """The visitor's bucket (1-100) against the rule's traffic."""
        return bucket(rule.seed(seed), 100)

    def variation_bucket(self, rule: _Rule, seed: str) -> int:
        """The visitor's bucket (1-10000) against an A/B test's variation ranges."""
        prefix = rule.salt if rule.salt else rule.campaign_id
        return bucket(f"{prefix}_{self._account}_{seed}", 10000)

    @classmethod
    def _in_traffic(cls, rule: _Rule, seed: str) -> bool:
        value = cls.traffic_bucket(rule, seed)
        return value != 0 and value <= rule.traffic

    def _allocated(self, rule: _Rule, seed: str) -> _Variation | None:
        if not self._in_traffic(rule, seed):
            return None
        if rule.type != AB:
            return rule.variations[0]
        value = self.variation_bucket(rule, seed)
        for variation in rule.variations:
            if variation.start <= value <= variation.end:
                return variation
        return None

    @staticmethod
    def _whitelisted(
        rule: _Rule, properties: Mapping[str, Any], call: Memberships, seed: str
    ) -> _Variation | None:
        targeted = [
            v for v in rule.variations if v.whitelist is not None and v.whitelist(properties, call)
        ]
        if len(targeted) < 2:
            return targeted[0] if targeted else None
        total = sum(v.weight for v in targeted)
        value = bucket(rule.seed(seed), 10000)
        allocated = 0
        for variation in targeted:  # weights scaled to 100 among the targeted
            weight = 100 / len(targeted) if total == 0 else (variation.weight / total) * 100
            size = _range_size(weight)
            if size and allocated + 1 <= value <= allocated + size:
                return variation
            allocated += size
        return None
