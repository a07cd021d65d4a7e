"""Process-wide flag overrides: layers that stack and unwind."""

from __future__ import annotations

from typing import Any

import pytest

from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.evaluation import overrides


def test_layers_stack_and_unwind() -> None:
    assert overrides.current() == {}
    bottom = {"a": overrides.decision("a", True), "b": overrides.decision("b", True)}
    top = {"a": overrides.decision("a", {"enabled": False, "variables": {"x": 1}})}
    overrides.add_layer(bottom)
    overrides.add_layer(top)
    try:
        assert overrides.current()["a"] == FlagDecision("a", False, {"x": 1}, Reason.OVERRIDE)
        assert overrides.current()["b"].enabled
        overrides.remove_layer(top)
        assert overrides.current()["a"].enabled
    finally:
        overrides.remove_layer(top)  # removing a layer twice is harmless
        overrides.remove_layer(bottom)
    assert overrides.current() == {}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("a", "yes"),
        ("a", {"enabled": "true"}),
        ("a", {"enabled": True, "variables": [1]}),
        ("a", {"enabled": True, "colour": "red"}),
        ("", True),
        (7, True),
    ],
)
def test_bad_overrides_say_what_is_expected(key: Any, value: Any) -> None:
    with pytest.raises(TypeError, match="override"):
        overrides.decision(key, value)
