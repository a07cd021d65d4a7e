"""Settings checked with the installed SDK's own schema."""

from __future__ import annotations

from vwo_heap_middleware.vwo_sdk.schema import settings_problem


def test_settings_problem_names_the_place() -> None:
    assert settings_problem([]) == "settings must be a JSON object"
    problem = settings_problem({"version": 1, "accountId": 1, "features": "x", "campaigns": []})
    assert problem is not None and problem.startswith("not valid VWO settings at features")
