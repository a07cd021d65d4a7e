"""Testing apps that use flags: ``override_flags``, the pytest plugin, and a local VWO gateway.

``override_flags`` and the plugin need nothing beyond the core; ``testing.gateway`` needs the
``[gateway]`` extra.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from ..decision import FlagDecision
from ..evaluation import overrides
from ..evaluation.overrides import Override

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["FlagOverrides", "override_flags"]


class override_flags:  # noqa: N801  (used like a function: ``with override_flags({...}):``)
    """Force flags on or off in every thread and task of the process, with reason ``override``.

    ``overrides`` maps a flag key to ``True``/``False`` or ``{"enabled": bool, "variables":
    {...}}``. Use it as a context manager or as a decorator of sync and async functions; nested
    overrides stack and unwind in order. Other keys are decided as usual.
    """

    def __init__(self, flags: Mapping[str, Override]) -> None:
        self._layer = {key: overrides.decision(key, value) for key, value in flags.items()}
        self._entered: list[dict[str, FlagDecision]] = []

    def __enter__(self) -> override_flags:
        self._entered.append(self._add())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        overrides.remove_layer(self._entered.pop())

    def __call__(self, function: F) -> F:
        """Each call of ``function`` runs with its own layer (safe across threads and tasks)."""
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_overridden(*args: Any, **kwargs: Any) -> Any:
                layer = self._add()
                try:
                    return await function(*args, **kwargs)
                finally:
                    overrides.remove_layer(layer)

            return cast(F, async_overridden)

        @functools.wraps(function)
        def overridden(*args: Any, **kwargs: Any) -> Any:
            layer = self._add()
            try:
                return function(*args, **kwargs)
            finally:
                overrides.remove_layer(layer)

        return cast(F, overridden)

    def _add(self) -> dict[str, FlagDecision]:
        layer = dict(self._layer)
        overrides.add_layer(layer)
        return layer


class FlagOverrides:
    """The pytest plugin's ``flag_overrides``: ``set(key, enabled=..., variables=...)``,
    ``clear()``; cleared after each test."""

    def __init__(self) -> None:
        self._layer: dict[str, FlagDecision] = {}
        overrides.add_layer(self._layer)

    def set(
        self, key: str, enabled: bool = True, variables: Mapping[str, Any] | None = None
    ) -> None:
        self._layer[key] = overrides.decision(
            key, {"enabled": enabled, "variables": dict(variables or {})}
        )
        overrides.refresh()

    def clear(self) -> None:
        self._layer.clear()
        overrides.refresh()

    def close(self) -> None:
        overrides.remove_layer(self._layer)
