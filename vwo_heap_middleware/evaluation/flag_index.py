"""What each flag's VWO rules need from a request, read once per settings revision."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..decision import NO_DETAILS, DecisionDetails
from .details import FlagRules
from .outcome import Answer, MembershipKey, Outcome

# ``custom_variable <name> inlist(<list id>)``: a Heap segment synced into a VWO attribute list.
INLIST = re.compile(r"inlist\(([^)]+)\)")

# Segment operators the SDK answers from gateway user details (location, parsed user agent).
USER_DETAILS_OPERATORS = frozenset(
    {
        "country",
        "region",
        "city",
        "os",
        "device_type",
        "device",
        "browser_string",
        "browser_version",
        "os_version",
    }
)
# Operators read straight from the request: the user agent string and the IP address.
REQUEST_OPERATORS = frozenset({"ua", "ip_address"})
# Operators whose answer depends on the User-Agent header (as it is, or parsed by the gateway).
USER_AGENT_OPERATORS = frozenset(
    {"ua", "os", "os_version", "device_type", "device", "browser_string", "browser_version"}
)


@dataclass(frozen=True, slots=True)
class FlagNeeds:
    """What deciding one flag needs beyond the visitor's context."""

    lists: tuple[tuple[str, str], ...]  # (custom variable, attribute list id) for inlist rules
    user_details: bool  # location or parsed user-agent rules
    request_facts: bool  # the decision can change with the user agent or IP
    user_agent: bool = False  # ... with the User-Agent header in particular (for ``Vary``)

    def memberships(self, custom_variables: Mapping[str, object]) -> set[MembershipKey]:
        """The (list id, value) membership answers a decision for these variables needs (the
        value as the SDK sends it: None as "")."""
        return {
            (list_id, membership_value(custom_variables[name]))
            for name, list_id in self.lists
            if name in custom_variables
        }


def membership_value(value: object) -> str:
    """A custom variable's value as the SDK asks the gateway about it (None as "")."""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class FlagIndex:
    """Each flag's needs in one settings revision (a digest of the settings names it), and
    its rules as decision details name them."""

    revision: str
    flags: Mapping[str, FlagNeeds]
    rules: Mapping[str, FlagRules] = field(default_factory=dict)
    metrics: frozenset[str] = frozenset()  # the events a conversion may name (flags, holdouts)
    web_connectivity: bool = True  # visitor ids like VWO's web SDK's are kept as they are

    def details(
        self, key: str, outcome: Outcome, memberships: Mapping[MembershipKey, Answer[bool]]
    ) -> DecisionDetails:
        """The details of flag ``key``'s ``outcome`` in this revision."""
        rules = self.rules.get(key)
        if rules is None:
            return NO_DETAILS
        return rules.details(outcome, memberships, self.revision)

    def reads_user_agent(self, keys: Iterable[str]) -> bool:
        """True when any of these flags' rules read the User-Agent header."""
        reading = self._reading_user_agent
        return bool(reading) and any(key in reading for key in keys)

    @functools.cached_property
    def _reading_user_agent(self) -> frozenset[str]:
        return frozenset(key for key, needs in self.flags.items() if needs.user_agent)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FlagIndex:
        campaigns = {
            str(c.get("id")): c for c in settings.get("campaigns") or [] if isinstance(c, dict)
        }
        shared: list[Any] = [
            h.get("segments") for h in settings.get("holdouts") or [] if isinstance(h, dict)
        ]
        flags = {}
        rules: dict[str, FlagRules] = {}
        for feature in settings.get("features") or []:
            if not isinstance(feature, dict) or not isinstance(feature.get("key"), str):
                continue
            segments = list(shared)
            for rule in feature.get("rules") or []:
                campaign = (
                    campaigns.get(str(rule.get("campaignId"))) if isinstance(rule, dict) else None
                )
                if campaign is None:
                    continue
                segments.append(campaign.get("segments"))
                segments += [
                    v.get("segments")
                    for v in campaign.get("variations") or []
                    if isinstance(v, dict)
                ]
            rules.setdefault(feature["key"], FlagRules.read(feature, campaigns))  # the SDK: first
            operators, lists = _scan(segments)
            details = bool(operators & USER_DETAILS_OPERATORS)
            flags[feature["key"]] = FlagNeeds(
                lists=tuple(sorted(lists)),
                user_details=details,
                request_facts=details or bool(operators & REQUEST_OPERATORS),
                user_agent=bool(operators & USER_AGENT_OPERATORS),
            )
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        return cls(
            revision=digest,
            flags=flags,
            rules=rules,
            metrics=metric_names(settings),
            web_connectivity=bool(settings.get("isWebConnectivityEnabled", True)),
        )


def metric_names(settings: Mapping[str, Any]) -> frozenset[str]:
    """Every metric identifier of the features and holdouts (what ``track_event`` accepts)."""
    owners = [*(settings.get("features") or []), *(settings.get("holdouts") or [])]
    return frozenset(
        metric["identifier"]
        for owner in owners
        if isinstance(owner, dict)
        for metric in owner.get("metrics") or []
        if isinstance(metric, dict) and isinstance(metric.get("identifier"), str)
    )


def _scan(roots: list[Any]) -> tuple[set[str], set[tuple[str, str]]]:
    operators: set[str] = set()
    lists: set[tuple[str, str]] = set()
    for key, value in segment_items(roots):
        operators.add(key)
        if key == "custom_variable" and isinstance(value, dict):
            for name, operand in value.items():
                match = INLIST.search(operand) if isinstance(operand, str) else None
                if match:
                    lists.add((name, match.group(1)))
    return operators, lists


def segment_items(roots: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Every (operator, operand) in segment DSLs, depth first; the operands of
    ``custom_variable`` and ``user`` are yielded, not entered."""
    stack = [root for root in roots if root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                if key not in ("custom_variable", "user"):
                    stack.append(value)
