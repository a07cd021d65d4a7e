"""Flag files: a concise flags file (TOML) compiled into the settings JSON VWO serves for an
account, or a raw VWO settings JSON. The local gateway serves them; the offline engine decides
from them.

A flags file::

    account_id = 123456
    sdk_key = "local-sdk-key"              # the default
    custom_variable = "heap_identity"      # default for segment rules

    [[flags]]
    key = "premium_checkout"
    variables = { tier_label = "Standard", discount_pct = 0 }

    [[flags.rules]]
    type = "heap_segment"    # custom_variable heap_identity inlist(heap_premium_users)
    segment = "heap_premium_users"
    variables = { tier_label = "Premium", discount_pct = 15 }

Rule types: ``heap_segment`` (``segment``, optional ``percent``), ``percentage`` (``percent``),
``everyone``, and ``ab_test`` (``variations`` with ``name``, ``weight`` and ``variables``,
optional ``segment`` and ``percent`` of traffic). Rules are tried in order, as in VWO: rollouts
first, then the first A/B test the visitor qualifies for.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

from ..config import DEFAULT_CUSTOM_VARIABLE, FLAG_KEY
from ..vwo_sdk.schema import settings_problem


class DataFileError(ValueError):
    """A settings, flags or segments file that cannot be used; the message says why."""


RULE_TYPES = ("heap_segment", "percentage", "everyone", "ab_test")
DEFAULT_SDK_KEY = "local-sdk-key"
_LIST_ID = re.compile(r"^[^()\s]{1,255}$")


def read_text(path: Path, source: str) -> str:
    """A data file's text, or a DataFileError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{source}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{source}: not UTF-8 text ({exc})") from exc


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a raw VWO settings JSON file and check it against the SDK's schema."""
    source = f"settings file {path}"
    try:
        settings = json.loads(read_text(Path(path), source))
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{source}: not valid JSON ({exc})") from exc
    validate_settings(settings, source=source)
    return settings  # type: ignore[no-any-return]


def load_flags_file(path: str | Path) -> dict[str, Any]:
    """Read a flags file and compile it into validated VWO settings."""
    source = f"flags file {path}"
    try:
        document = tomllib.loads(read_text(Path(path), source))
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"{source}: not valid TOML ({exc})") from exc
    return compile_flags(document, source=source)


def validate_settings(settings: object, *, source: str) -> None:
    """Raise DataFileError unless *settings* passes the installed SDK's settings schema."""
    problem = settings_problem(settings)
    if problem is not None:
        raise DataFileError(f"{source}: {problem}")


def compile_flags(document: Mapping[str, Any], *, source: str = "flags") -> dict[str, Any]:
    """Compile a parsed flags document into VWO settings JSON (see the module docstring)."""
    compiler = _Compiler(source)
    settings = compiler.compile(document)
    validate_settings(settings, source=source)
    return settings


class _Compiler:
    def __init__(self, source: str) -> None:
        self.source = source
        self.campaigns: list[dict[str, Any]] = []

    def at(self, where: str) -> str:
        return f"{self.source}: {where}"

    def fail(self, where: str, problem: str) -> DataFileError:
        return DataFileError(f"{self.at(where)}: {problem}")

    def compile(self, document: Mapping[str, Any]) -> dict[str, Any]:
        account_id = document.get("account_id", 0)
        if not isinstance(account_id, int) or isinstance(account_id, bool) or account_id < 0:
            raise self.fail("account_id", f"must be a whole number, got {account_id!r}")
        custom_variable = document.get("custom_variable", DEFAULT_CUSTOM_VARIABLE)
        if not isinstance(custom_variable, str) or not FLAG_KEY.match(custom_variable):
            raise self.fail("custom_variable", f"must be a name, got {custom_variable!r}")
        flags = document.get("flags")
        if not isinstance(flags, list) or not flags:
            raise self.fail("flags", "add at least one [[flags]] table")
        features = []
        seen: set[str] = set()
        for index, flag in enumerate(flags, start=1):
            if not isinstance(flag, dict):
                raise self.fail(f"flag {index}", "must be a table")
            key = flag.get("key")
            if not isinstance(key, str) or not FLAG_KEY.match(key):
                raise self.fail(f"flag {index}", f"'key' must be a flag key, got {key!r}")
            if key in seen:
                raise self.fail(f"flag '{key}'", "defined twice")
            seen.add(key)
            features.append(self.feature(index, key, flag, custom_variable))
        settings: dict[str, Any] = {
            "version": document.get("version", 1),
            "accountId": account_id,
            "features": features,
            "campaigns": self.campaigns,
            "groups": {},
            "campaignGroups": {},
        }
        sdk_key = document.get("sdk_key", DEFAULT_SDK_KEY)
        if not isinstance(sdk_key, str) or not sdk_key:
            raise self.fail("sdk_key", f"must be a non-empty string, got {sdk_key!r}")
        settings["sdkKey"] = sdk_key  # the SDK needs one in its settings
        return settings

    def feature(
        self, feature_id: int, key: str, flag: Mapping[str, Any], custom_variable: str
    ) -> dict[str, Any]:
        where = f"flag '{key}'"
        defaults = flag.get("variables", {})
        if not isinstance(defaults, dict):
            raise self.fail(where, "'variables' must be a table of name = value")
        variables = [
            _variable(index, name, value, self.at(where))
            for index, (name, value) in enumerate(defaults.items(), start=1)
        ]
        rules_in = flag.get("rules", [])
        if not isinstance(rules_in, list):
            raise self.fail(where, "'rules' must be a list of [[flags.rules]] tables")
        rules = []
        for number, rule in enumerate(rules_in, start=1):
            rule_where = f"{where}, rule {number}"
            if not isinstance(rule, dict):
                raise self.fail(rule_where, "must be a table")
            rules.append(self.rule(key, number, rule, variables, custom_variable, rule_where))
        return {
            "id": feature_id,
            "key": key,
            "name": str(flag.get("name", key)),
            "status": "ON" if flag.get("enabled", True) else "OFF",
            "type": "FEATURE_FLAG",
            "metrics": [
                {"id": feature_id * 1000 + n, "type": "CUSTOM_GOAL", "identifier": identifier}
                for n, identifier in enumerate([f"{key}_used", *self.metrics(flag, where)])
            ],
            "impactCampaign": {},
            "variables": variables,
            "rules": rules,
        }

    def metrics(self, flag: Mapping[str, Any], where: str) -> list[str]:
        """``metrics = ["purchase", ...]``: the conversions this flag measures (``track``)."""
        metrics = flag.get("metrics", [])
        if not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
            raise self.fail(where, "'metrics' must be a list of event names")
        return list(metrics)

    def rule(
        self,
        flag_key: str,
        number: int,
        rule: Mapping[str, Any],
        variables: list[dict[str, Any]],
        default_custom_variable: str,
        where: str,
    ) -> dict[str, Any]:
        kind = rule.get("type")
        if kind not in RULE_TYPES:
            raise self.fail(where, f"'type' must be one of {', '.join(RULE_TYPES)}, got {kind!r}")
        rule_key = f"{kind}{number}"
        campaign_id = len(self.campaigns) + 1
        custom_variable = rule.get("custom_variable", default_custom_variable)
        if not isinstance(custom_variable, str) or not FLAG_KEY.match(custom_variable):
            raise self.fail(where, f"'custom_variable' must be a name, got {custom_variable!r}")
        segment = rule.get("segment")
        if kind == "heap_segment" and segment is None:
            raise self.fail(where, "a heap_segment rule needs 'segment', the attribute list id")
        if segment is not None and (not isinstance(segment, str) or not _LIST_ID.match(segment)):
            raise self.fail(
                where, f"'segment' must be a list id without spaces or ( ), got {segment!r}"
            )
        segments = (
            {"or": [{"custom_variable": {custom_variable: f"inlist({segment})"}}]}
            if segment
            else {}
        )
        percent = _percent(rule.get("percent", 100), self.at(where), "percent")
        if kind == "percentage" and "percent" not in rule:
            raise self.fail(where, "a percentage rule needs 'percent'")
        campaign: dict[str, Any] = {
            "id": campaign_id,
            "key": f"{flag_key}_{rule_key}",
            "name": f"{flag_key}_{rule_key}",
            "status": "RUNNING",
            "isForcedVariationEnabled": False,
            "isAlwaysCheckSegment": False,
        }
        if kind == "ab_test":
            campaign.update(
                type="FLAG_TESTING",
                percentTraffic=percent,
                segments=segments,
                variations=self.ab_variations(rule, variables, where),
            )
            self.campaigns.append(campaign)
            return {"type": "FLAG_TESTING", "ruleKey": rule_key, "campaignId": campaign_id}
        campaign.update(
            type="FLAG_ROLLOUT",
            percentTraffic=100,
            segments={},
            variations=[
                {
                    "id": 1,
                    "name": f"Rollout-rule-{number}",
                    "weight": percent,
                    "segments": segments,
                    "variables": _override(variables, rule.get("variables", {}), self.at(where)),
                }
            ],
        )
        self.campaigns.append(campaign)
        return {
            "type": "FLAG_ROLLOUT",
            "ruleKey": rule_key,
            "campaignId": campaign_id,
            "variationId": 1,
        }

    def ab_variations(
        self, rule: Mapping[str, Any], variables: list[dict[str, Any]], where: str
    ) -> list[dict[str, Any]]:
        variations_in = rule.get("variations")
        if not isinstance(variations_in, list) or len(variations_in) < 2:
            raise self.fail(where, "an ab_test rule needs at least two [[flags.rules.variations]]")
        variations: list[dict[str, Any]] = []
        for index, variation in enumerate(variations_in, start=1):
            v_where = f"{where}, variation {index}"
            if not isinstance(variation, dict):
                raise self.fail(v_where, "must be a table")
            weight = _percent(variation.get("weight"), self.at(v_where), "weight")
            variations.append(
                {
                    "id": index,
                    "name": str(
                        variation.get("name", "Default" if index == 1 else f"Variation-{index - 1}")
                    ),
                    "weight": weight,
                    "variables": _override(
                        variables, variation.get("variables", {}), self.at(v_where)
                    ),
                }
            )
        total = sum(float(v["weight"]) for v in variations)
        if abs(total - 100) > 1e-6:
            raise self.fail(
                where, f"variation weights must add up to 100, they add up to {total:g}"
            )
        return variations


_TYPES: list[tuple[type, str]] = [
    (bool, "boolean"),
    (int, "integer"),
    (float, "double"),
    (str, "string"),
    (dict, "json"),
]
_NUMBERS = {"integer", "double"}


def _percent(value: object, where: str, name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise DataFileError(f"{where}: '{name}' must be a number from 0 to 100, got {value!r}")
    return value


def _variable(index: int, name: object, value: object, where: str) -> dict[str, Any]:
    if not isinstance(name, str) or not FLAG_KEY.match(name):
        raise DataFileError(f"{where}: {name!r} is not a valid variable name")
    for python_type, vwo_type in _TYPES:
        if isinstance(value, python_type):
            return {"id": index, "key": name, "type": vwo_type, "value": value}
    raise DataFileError(
        f"{where}: variable {name!r} must be a string, number, boolean or table, got {value!r}"
    )


def _override(
    defaults: list[dict[str, Any]], overrides: object, where: str
) -> list[dict[str, Any]]:
    """The flag's variables with a rule's or variation's values put in, types checked."""
    if not isinstance(overrides, dict):
        raise DataFileError(f"{where}: 'variables' must be a table of name = value")
    declared = {v["key"] for v in defaults}
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise DataFileError(
            f"{where}: variable {unknown[0]!r} is not declared in the flag's 'variables'"
        )
    result = []
    for variable in defaults:
        if variable["key"] not in overrides:
            result.append(dict(variable))
            continue
        value = overrides[variable["key"]]
        kind = _variable(variable["id"], variable["key"], value, where)["type"]
        if kind != variable["type"] and {kind, variable["type"]} != _NUMBERS:
            raise DataFileError(
                f"{where}: variable {variable['key']!r} is a {variable['type']}, got {value!r}"
            )
        result.append({**variable, "value": value})
    return result
