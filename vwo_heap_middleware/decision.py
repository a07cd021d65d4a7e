"""``FlagDecision``: what one flag is for one visitor, and why."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .config import FlagDefault


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


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FlagDecision:
    key: str
    enabled: bool
    variables: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    reason: Reason = Reason.NOT_TARGETED

    def variable(self, name: str, default: Any = None) -> Any:
        """The value of a flag variable, or ``default`` when the decision has none."""
        return self.variables.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "variables": dict(self.variables),
            "reason": self.reason.value,
        }

    def __bool__(self) -> bool:
        return self.enabled

    @classmethod
    def default(cls, key: str, reason: Reason, default: FlagDefault) -> FlagDecision:
        """The configured default of a flag (off, no variables unless configured)."""
        return cls(key, default.enabled, default.variables, reason)
