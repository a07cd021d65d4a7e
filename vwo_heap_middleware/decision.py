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


@dataclass(frozen=True, slots=True)
class FlagDecision:
    """One flag for one visitor: ``enabled``, its ``variables`` and the ``reason``.

    ``stale``: decided on a segment answer kept from before the gateway failed. ``evaluator``:
    who evaluated VWO's rules, ``"native"`` or ``"sdk"`` (``""`` when nobody did: a default, an
    override).
    """

    key: str
    enabled: bool
    variables: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    reason: Reason = Reason.NOT_TARGETED
    stale: bool = False
    evaluator: str = ""

    def variable(self, name: str, default: Any = None) -> Any:
        """The value of a flag variable, or ``default`` when the decision has none."""
        return self.variables.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``"stale": true`` is added only to decisions made on stale answers."""
        result = {
            "enabled": self.enabled,
            "variables": dict(self.variables),
            "reason": self.reason.value,
        }
        if self.stale:
            result["stale"] = True
        return result

    def __bool__(self) -> bool:
        return self.enabled

    @classmethod
    def default(cls, key: str, reason: Reason, default: FlagDefault) -> FlagDecision:
        """The configured default of a flag (off, no variables unless configured)."""
        return cls(key, default.enabled, default.variables, reason)
