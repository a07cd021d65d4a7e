"""VWO flag decisions without the SDK: settings compiled once per revision, evaluated lock-free.

``NativeSettings.compile(settings, sdk)`` reads VWO settings the way vwo-fme-python-sdk does
and marks each flag native or not: a flag using anything this module does not cover (mutually
exclusive groups, holdouts, usage tracking, debugger events, location and user-agent segments,
malformed segments) is left to the SDK as a whole, with the reason. ``evaluate`` decides a
native flag for a context with no lock, singleton or schema check, and builds the impressions
the SDK would have sent. Where the SDK would fail or log an error on a call, it raises
``Fallback`` and the caller asks the SDK.

The semantics are copied from the SDK's source (``api/get_flag_api.py``,
``utils/decision_util.py``, ``services/campaign_decision_service.py``,
``packages/segmentation_evaluator``, ``utils/network_util.py``) and proven equal to it, case by
case, by ``tests/test_native_differential.py``; they hold only for the SDK releases listed in
``VERIFIED_SDKS``, checked at start-up.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from murmurhash import mrmr  # the SDK's own murmurhash (the mmh3 wheel crashes on surrogates)

from .events import Event
from .flag_index import (
    INLIST,
    REQUEST_OPERATORS,
    USER_DETAILS_OPERATORS,
    membership_value,
    segment_items,
)

# SDK release -> whether its inlist defect (and so this project's patch) is present: the
# combinations the differential suite passed on. Native evaluation is off for any other.
VERIFIED_SDKS: Mapping[str, bool] = MappingProxyType({"1.65.0": True})

ROLLOUT, AB, PERSONALIZE = "FLAG_ROLLOUT", "FLAG_TESTING", "FLAG_PERSONALIZE"
VARIATION_SHOWN = "vwo_variationShown"
# Segment operators answered from user details, the request, storage or web campaigns.
SDK_OPERATORS = USER_DETAILS_OPERATORS | REQUEST_OPERATORS | {"featureId", "campaignVariation"}
CONTEXT_KEYS = frozenset(
    {"id", "custom_variables", "user_agent", "ip_address", "_vwo", "session_id", "bucketingSeed"}
)
WEB_UUID = re.compile(r"^[DJ][0-9A-Fa-f]{32}$")
VWO_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://vwo.com")


class Unsupported(Exception):
    """Compile time: the SDK decides this whole flag; the message says why."""


class Fallback(Exception):
    """Call time: the SDK would fail or log an error on this call, so it answers it."""


@dataclass(frozen=True)
class SdkFacts:
    """What the SDK puts in impressions, from its init options and constants."""

    name: str
    version: str
    account_id: str  # the init options' account: visitor UUIDs and the event query
    sdk_key: str
    usage_meta: Callable[[], Mapping[str, Any] | None]  # the SDK's usage block, given once


@dataclass(frozen=True, slots=True)
class NativeOutcome:
    enabled: bool
    variables: Mapping[str, Any]
    events: tuple[Event, ...]
    missing: bool  # a membership answer was wanted and not known


class _Call:
    """One evaluation's membership answers, and whether one it wanted was missing."""

    __slots__ = ("memberships", "missing")

    def __init__(self, memberships: Mapping[tuple[str, str], bool | None]) -> None:
        self.memberships = memberships
        self.missing = False


Segment = Callable[[Mapping[str, Any], _Call], bool]


def _always(properties: Mapping[str, Any], call: _Call) -> bool:
    return True


def _never(properties: Mapping[str, Any], call: _Call) -> bool:
    return False


# -- the segment DSL (segment_evaluator.py, segment_operand_evaluator.py) -------------------


def compile_segment(dsl: Any) -> Segment:
    """A segment DSL as the SDK's ``validate_segmentation`` reads it (``{}`` passes)."""
    if isinstance(dsl, dict) and not dsl:
        return _always
    _refuse_sdk_operators(dsl)
    return _node(dsl)


def _refuse_sdk_operators(dsl: Any) -> None:
    for key, _ in segment_items([dsl]):
        if key in SDK_OPERATORS:
            raise Unsupported(f"a {key!r} segment")


def _node(dsl: Any) -> Segment:
    if not isinstance(dsl, dict) or not dsl:
        raise Unsupported("a segment node that is not a non-empty object")
    operator = next(iter(dsl))  # only a node's first key counts
    value = dsl[operator]
    if operator == "not":
        inner = _node(value)
        return lambda p, c: not inner(p, c)
    if operator in ("and", "or"):
        if not isinstance(value, list):
            raise Unsupported(f"an {operator!r} node that is not a list")
        parts = tuple(_node(item) for item in value)
        if operator == "and":
            return lambda p, c: all(part(p, c) for part in parts)
        return lambda p, c: any(part(p, c) for part in parts)
    if operator == "custom_variable":
        return _custom_variable(value)
    if operator == "user":
        if not isinstance(value, str):
            raise Unsupported("a 'user' segment that is not a string")
        users = frozenset(user.strip() for user in value.split(","))
        return lambda p, c: p.get("_vwoUserId") in users
    return _never  # unknown operators are false


def _custom_variable(value: Any) -> Segment:
    if not isinstance(value, dict) or not value:
        raise Unsupported("a 'custom_variable' segment that is not a non-empty object")
    name = next(iter(value))
    operand = value[name]
    if not isinstance(operand, str):
        raise Unsupported("a 'custom_variable' operand that is not a string")
    if "inlist" in operand:
        match = INLIST.search(operand)
        if match is None:
            return _never
        list_id = match.group(1)

        def inlist(p: Mapping[str, Any], c: _Call) -> bool:
            if name not in p:
                return False
            tag = p[name]
            answer = c.memberships.get((list_id, membership_value(tag)))
            if answer is None:
                c.missing = True
                return False
            return answer

        return inlist
    compare = _comparison(operand)

    def custom(p: Mapping[str, Any], c: _Call) -> bool:
        return name in p and compare(_converted(_tag_value(p[name])))

    return custom


def _tag_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    return str(value)


def _converted(value: Any) -> str:
    """The SDK's ``convert_value``: numbers compare as numbers (``"1e3" == "1000"``)."""
    if isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except ValueError:
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


_LOWER = re.compile(r"^lower\((.*)\)")
_WILDCARD = re.compile(r"^wildcard\((.*)\)")
_REGEX = re.compile(r"^regex\((.*)\)")
_ORDER = (
    (re.compile(r"^gt\(([\d.]+)\)$"), lambda order: order > 0),
    (re.compile(r"^gte\(([\d.]+)\)$"), lambda order: order >= 0),
    (re.compile(r"^lt\(([\d.]+)\)$"), lambda order: order < 0),
    (re.compile(r"^lte\(([\d.]+)\)$"), lambda order: order <= 0),
)


def _comparison(operand: str) -> Callable[[str], bool]:
    """The operand's test of a converted tag value, with the operand parsed once."""
    if match := _LOWER.search(operand):
        lowered = _converted(match.group(1)).lower()
        return lambda tag: tag.lower() == lowered
    if match := _WILDCARD.search(operand):
        inner = match.group(1)
        starts, ends = inner.startswith("*"), inner.endswith("*")
        part = _converted(inner.lstrip("*").rstrip("*"))
        if starts and ends:
            return lambda tag: part in tag
        if starts:
            return lambda tag: tag.endswith(part)
        if ends:
            return lambda tag: tag.startswith(part)
        return lambda tag: tag == part
    if match := _REGEX.search(operand):
        try:
            pattern = re.compile(_converted(match.group(1)))
        except re.error:
            return lambda tag: False
        return lambda tag: pattern.search(tag) is not None
    for regex, holds in _ORDER:
        if match := regex.search(operand):
            bound = _converted(match.group(1))
            return _ordered(bound, holds)
    expected = _converted(operand)
    return lambda tag: tag == expected


def _ordered(bound: str, holds: Callable[[int], bool]) -> Callable[[str], bool]:
    numeric = _is_numeric_version(bound)

    def compare(tag: str) -> bool:
        return _is_numeric_version(tag) == numeric and holds(_compare_versions(tag, bound))

    return compare


def _is_numeric_version(version: str) -> bool:
    return bool(version) and all(part.isdigit() for part in version.split("."))


def _compare_versions(first: str, second: str) -> int:
    """The SDK's dotted compare; raises where it raises (``int("x")``), so the SDK answers."""
    parts1, parts2 = first.split("."), second.split(".")
    for i in range(max(len(parts1), len(parts2))):
        part1 = parts1[i] if i < len(parts1) else "0"
        part2 = parts2[i] if i < len(parts2) else "0"
        if part1.isdigit():
            num1, num2 = int(part1), int(part2)
            if num1 != num2:
                return -1 if num1 < num2 else 1
        elif part1 != part2:
            return -1 if part1 < part2 else 1
    return 0


# -- bucketing (decision_maker.py, campaign_util.py) ---------------------------------------


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
    left to the SDK."""

    def __init__(self, settings: Mapping[str, Any], sdk: SdkFacts) -> None:
        self._sdk = sdk
        self._account = settings["accountId"]  # bucketing and hashed user ids use the settings'
        self._settings_namespace = uuid.uuid5(VWO_NAMESPACE, str(self._account))
        self._init_namespace = uuid.uuid5(VWO_NAMESPACE, str(sdk.account_id))
        self._web = bool(settings.get("isWebConnectivityEnabled", True))
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
        memberships: Mapping[tuple[str, str], bool | None],
        *,
        usage_meta: bool = True,
    ) -> NativeOutcome:
        """Decide native flag ``key`` as ``get_flag(key, context)`` would; ``Fallback`` when
        the SDK would fail or log an error instead. ``usage_meta=False``: leave the SDK's
        usage block for the SDK (a shadow evaluation)."""
        try:
            return self._evaluate(self.flags[key], context, _Call(memberships), usage_meta)
        except Fallback:
            raise
        except Exception as error:
            raise Fallback(repr(error)) from error

    def _evaluate(
        self, flag: _Flag, context: Mapping[str, Any], call: _Call, usage_meta: bool
    ) -> NativeOutcome:
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
                hashed.append(uuid.uuid5(self._settings_namespace, user_id).hex.upper())
            return hashed[0]

        shown: list[tuple[Any, Any]] = []  # (campaign id, variation id) impressions, in order
        enabled, variables = False, _NO_VARIABLES
        check_experiments = not flag.rollouts
        for rule in flag.rollouts:
            if rule.segment({**custom, "_vwoUserId": vwo_user_id(rule)}, call):
                if self._in_traffic(rule, seed):  # the first rollout in segment is the only one
                    variation = rule.variations[0]
                    enabled, variables, check_experiments = True, variation.variables, True
                    shown.append((rule.campaign_id, variation.id))
                break
        if check_experiments:
            for rule in flag.experiments:
                value = vwo_user_id(rule)
                if rule.forced:
                    chosen = self._whitelisted(rule, {"_vwoUserId": value}, call, seed)
                    if chosen is not None:
                        enabled, variables = True, chosen.variables
                        shown.append((rule.campaign_id, chosen.id))
                        break
                if rule.segment({**custom, "_vwoUserId": value}, call):
                    allocated = self._allocated(rule, seed)
                    if allocated is not None:
                        enabled, variables = True, allocated.variables
                        shown.append((rule.campaign_id, allocated.id))
                    break  # the first experiment in segment ends the search
        if flag.impact_campaign:
            shown.append((flag.impact_campaign, 2 if enabled else 1))
        events = self._impressions(context, user_id, shown, usage_meta) if shown else ()
        return NativeOutcome(enabled, variables, events, call.missing)

    @staticmethod
    def _in_traffic(rule: _Rule, seed: str) -> bool:
        value = bucket(rule.seed(seed), 100)
        return value != 0 and value <= rule.traffic

    def _allocated(self, rule: _Rule, seed: str) -> _Variation | None:
        if not self._in_traffic(rule, seed):
            return None
        if rule.type != AB:
            return rule.variations[0]
        prefix = rule.salt if rule.salt else rule.campaign_id
        value = bucket(f"{prefix}_{self._account}_{seed}", 10000)
        for variation in rule.variations:
            if variation.start <= value <= variation.end:
                return variation
        return None

    @staticmethod
    def _whitelisted(
        rule: _Rule, properties: Mapping[str, Any], call: _Call, seed: str
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

    def _impressions(
        self,
        context: Mapping[str, Any],
        user_id: str,
        shown: list[tuple[Any, Any]],
        usage_meta: bool,
    ) -> tuple[Event, ...]:
        """``vwo_variationShown`` events as the SDK captures them (network_util.py)."""
        sdk = self._sdk
        if self._web and WEB_UUID.match(user_id):
            visitor = user_id
        else:
            visitor = uuid.uuid5(self._init_namespace, user_id).hex.upper()
        session = context.get("session_id")
        now = int(time.time())
        if session is None or session == 0:
            session = now
        agent, ip = context.get("user_agent"), context.get("ip_address")
        events = []
        for campaign_id, variation_id in shown:
            millis = int(time.time() * 1000)
            props: dict[str, Any] = {
                "vwo_sdkName": sdk.name,
                "vwo_sdkVersion": sdk.version,
                "vwo_envKey": sdk.sdk_key,
                "id": campaign_id,
                "variation": str(variation_id),
                "isFirst": 1,
            }
            meta = sdk.usage_meta() if usage_meta else None
            if meta:
                props["vwoMeta"] = meta
            body: dict[str, Any] = {
                "msgId": f"{visitor}-{millis}",
                "visId": visitor,
                "sessionId": session,
                "event": {"props": props, "name": VARIATION_SHOWN, "time": millis},
            }
            if agent is not None:
                body["visitor_ua"] = agent
            if ip is not None:
                body["visitor_ip"] = ip
            body["visitor"] = {"props": {"vwo_fs_environment": sdk.sdk_key}}
            if ip:
                body["visitor"]["props"]["ip"] = ip
            query = {
                "en": VARIATION_SHOWN,
                "a": str(sdk.account_id),
                "eTime": str(millis),
                "random": str(random.random()),
                "p": "FS",
                "visitor_ua": str(agent),
                "visitor_ip": str(ip),
                "sn": sdk.name,
                "sv": sdk.version,
                "env": sdk.sdk_key,
            }
            events.append(Event({"d": body}, query))
        return tuple(events)


_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})
