"""Flag overrides for the whole process: every engine decides an overridden key as told.

Layers stack: the newest layer that names a key wins, and removing a layer uncovers the ones
below. ``testing.override_flags`` and the pytest plugin's ``flag_overrides`` add layers; the
engine reads ``current()``, which costs one global read when nothing is overridden.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..decision import FlagDecision, Reason

Override = bool | Mapping[str, Any]
"""``True``/``False``, or ``{"enabled": bool, "variables": {...}}``."""

_lock = threading.Lock()
_layers: list[dict[str, FlagDecision]] = []
_current: Mapping[str, FlagDecision] = MappingProxyType({})


def decision(key: str, value: Override) -> FlagDecision:
    """The decision an override stands for; a clear error for anything else."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"override keys must be flag keys (strings), got {key!r}")
    if isinstance(value, bool):
        return FlagDecision(key, value, reason=Reason.OVERRIDE)
    if isinstance(value, Mapping) and isinstance(value.get("enabled"), bool):
        unknown = set(value) - {"enabled", "variables"}
        variables = value.get("variables") or {}
        if not unknown and isinstance(variables, Mapping):
            frozen = MappingProxyType(dict(variables))
            return FlagDecision(key, value["enabled"], frozen, Reason.OVERRIDE)
    raise TypeError(
        f"override for {key!r} must be True, False or "
        f'{{"enabled": bool, "variables": {{...}}}}, got {value!r}'
    )


def add_layer(layer: dict[str, FlagDecision]) -> None:
    """Put ``layer`` on top. It is live: change it, then call ``refresh()``."""
    with _lock:
        _layers.append(layer)
        _refresh()


def remove_layer(layer: dict[str, FlagDecision]) -> None:
    with _lock:
        for index in range(len(_layers) - 1, -1, -1):
            if _layers[index] is layer:
                del _layers[index]
                break
        _refresh()


def refresh() -> None:
    """A live layer changed: recompute what is overridden."""
    with _lock:
        _refresh()


def current() -> Mapping[str, FlagDecision]:
    """Every overridden key and its decision (empty when nothing is overridden)."""
    return _current


def _refresh() -> None:
    global _current
    merged: dict[str, FlagDecision] = {}
    for layer in _layers:
        merged.update(layer)
    _current = MappingProxyType(merged)
