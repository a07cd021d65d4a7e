"""``FlagDecision``: what one flag is for one visitor, and why (``Reason``), in this package's
words and in the vocabulary OpenFeature and OpenTelemetry share."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .config import FlagDefault

PROVIDER_NAME = "vwo-heap"
"""How OpenFeature and OpenTelemetry name this provider."""


class Reason(str, enum.Enum):
    """Why a flag is what it is."""

    TARGETED = "targeted"  # a VWO rule matched and the flag is on
    NOT_TARGETED = "not_targeted"  # VWO evaluated and no rule gave this visitor the flag
    NO_USER = "no_user"  # no identity or user id: nothing to evaluate
    NOT_READY = "not_ready"  # the engine has no settings yet
    TIMEOUT = "timeout"  # the request's evaluation budget ran out
    GATEWAY_ERROR = "gateway_error"  # a segment lookup failed and no cached answer was left
    UNKNOWN_FLAG = "unknown_flag"  # the settings have no flag with this key
    ERROR = "error"  # the SDK failed
    OVERRIDE = "override"  # set by the application, not by VWO

    def __str__(self) -> str:
        return self.value

    @property
    def evaluation_reason(self) -> str:
        """OpenFeature's resolution reason (``TARGETING_MATCH``, ``DEFAULT``, ...); the
        semantic conventions' ``feature_flag.result.reason`` is it in lower case."""
        return _VOCABULARY[self][0]

    @property
    def error_code(self) -> str | None:
        """OpenFeature's error code when this is an error (``FLAG_NOT_FOUND``, ...), else None."""
        return _VOCABULARY[self][1]

    @property
    def error_type(self) -> str | None:
        """The semantic conventions' ``error.type`` when this is an error, else None."""
        return _VOCABULARY[self][2]


# Reason -> (OpenFeature reason, OpenFeature error code, OpenTelemetry error.type).
_VOCABULARY: Mapping[Reason, tuple[str, str | None, str | None]] = {
    Reason.TARGETED: ("TARGETING_MATCH", None, None),
    Reason.NOT_TARGETED: ("DEFAULT", None, None),
    Reason.OVERRIDE: ("STATIC", None, None),
    Reason.NO_USER: ("ERROR", "TARGETING_KEY_MISSING", "targeting_key_missing"),
    Reason.NOT_READY: ("ERROR", "PROVIDER_NOT_READY", "provider_not_ready"),
    Reason.UNKNOWN_FLAG: ("ERROR", "FLAG_NOT_FOUND", "flag_not_found"),
    Reason.TIMEOUT: ("ERROR", "GENERAL", "timeout"),
    Reason.GATEWAY_ERROR: ("ERROR", "GENERAL", "general"),
    Reason.ERROR: ("ERROR", "GENERAL", "general"),
}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class SegmentAnswer(str, enum.Enum):
    """What a Heap segment (a VWO attribute list) said of the visitor in one decision."""

    MEMBER = "member"
    NOT_MEMBER = "not_member"
    STALE = "stale"  # an answer kept from before the gateway failed
    UNKNOWN = "unknown"  # no answer: the lookup failed or ran out of time

    def __str__(self) -> str:
        return self.value


RULE_TYPES: Mapping[str, str] = MappingProxyType(
    {"FLAG_ROLLOUT": "rollout", "FLAG_TESTING": "ab_test", "FLAG_PERSONALIZE": "personalize"}
)
"""VWO's campaign types as the details name them."""


@dataclass(frozen=True, slots=True)
class DecisionDetails:
    """Why a decision is what it is: the VWO rule that gave it (``rule_key``, ``rule_type``:
    ``rollout``, ``ab_test`` or ``personalize``, ``rule_index`` in the flag's rules), its
    campaign and the variation; ``in_experiment`` when an A/B test bucketed the visitor (an
    impression was sent); the Heap segments consulted, by attribute list id; the settings
    ``revision``; who evaluated; ``cached`` when the decision came from the decision cache
    rather than being made for this request. A decision no rule gave has no rule fields."""

    rule_key: str | None = None
    rule_type: str | None = None
    rule_index: int | None = None
    campaign_id: Any = None
    campaign_key: str | None = None
    variation_id: Any = None
    variation_name: str | None = None
    in_experiment: bool = False
    segments: tuple[tuple[str, SegmentAnswer], ...] = ()
    revision: str | None = None
    evaluator: str = ""
    cached: bool = False
    feature_id: Any = None  # the flag's id in VWO's settings

    @property
    def segment_answers(self) -> dict[str, str]:
        """``{attribute list id: "member" | "not_member" | "stale" | "unknown"}``."""
        return {list_id: answer.value for list_id, answer in self.segments}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, every field (``segments`` as ``segment_answers``)."""
        return {
            "rule_key": self.rule_key,
            "rule_type": self.rule_type,
            "rule_index": self.rule_index,
            "campaign_id": self.campaign_id,
            "campaign_key": self.campaign_key,
            "variation_id": self.variation_id,
            "variation_name": self.variation_name,
            "in_experiment": self.in_experiment,
            "segments": self.segment_answers,
            "revision": self.revision,
            "evaluator": self.evaluator,
            "cached": self.cached,
            "feature_id": self.feature_id,
        }


NO_DETAILS = DecisionDetails()
"""The details of a decision nobody evaluated (a default, an override)."""


@dataclass(frozen=True, slots=True)
class FlagDecision:
    """One flag for one visitor: ``enabled``, its ``variables`` and the ``reason``.

    ``stale``: decided on a segment answer kept from before the gateway failed. ``evaluator``:
    who evaluated VWO's rules, ``"native"`` or ``"sdk"`` (``""`` when nobody did: a default, an
    override). ``details``: which rule and variation, the segment answers, the revision, whether
    it came from the cache (``DecisionDetails``).
    """

    key: str
    enabled: bool
    variables: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    reason: Reason = Reason.NOT_TARGETED
    stale: bool = False
    evaluator: str = ""
    # Metadata: two decisions with the same outcome are equal whichever rule or cache gave them.
    details: DecisionDetails = field(default=NO_DETAILS, compare=False, repr=False)

    @property
    def variant(self) -> str:
        """The variation's name when a rule gave one, else ``"on"``/``"off"`` (OpenFeature's
        ``variant``, OpenTelemetry's ``feature_flag.result.variant``)."""
        name = self.details.variation_name
        return name if name is not None else ("on" if self.enabled else "off")

    def variable(self, name: str, default: Any = None) -> Any:
        """The value of a flag variable, or ``default`` when the decision has none."""
        return self.variables.get(name, default)

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        """JSON-ready; ``"stale": true`` is added only to decisions made on stale answers, and
        ``"details"`` (``DecisionDetails.to_dict()``) when asked for."""
        result: dict[str, Any] = {
            "enabled": self.enabled,
            "variables": dict(self.variables),
            "reason": self.reason.value,
        }
        if self.stale:
            result["stale"] = True
        if details:
            result["details"] = self.details.to_dict()
        return result

    def __bool__(self) -> bool:
        return self.enabled

    @classmethod
    def default(cls, key: str, reason: Reason, default: FlagDefault) -> FlagDecision:
        """The configured default of a flag (off, no variables unless configured)."""
        return cls(key, default.enabled, default.variables, reason)
