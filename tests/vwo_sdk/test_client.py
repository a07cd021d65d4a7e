"""``VwoSdk``, one engine's view of the process-wide SDK: evaluate with answers given, errors
seen, the process state one object."""

from __future__ import annotations

import pytest

from tests.support import EngineFactory
from vwo_heap_middleware.evaluation.outcome import Answers
from vwo_heap_middleware.identity import short_hash
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.vwo_sdk import VwoSdk
from vwo_heap_middleware.vwo_sdk.client import SDK_FAILED


def test_evaluate_answers_the_sdks_lookups_and_says_what_was_missing(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    sdk = make_engine(demo_gateway)._sdk
    ada = {"id": "ada@example.com", "custom_variables": {"heap_identity": "ada@example.com"}}
    member = Answers({("heap_premium_users", "ada@example.com"): True})
    given = sdk.evaluate("premium_checkout", ada, member)
    assert (given.enabled, given.missing, given.error) == (True, False, False)
    assert given.variables == {"tier_label": "Premium", "discount_pct": 15}
    unknown = sdk.evaluate("premium_checkout", ada, Answers({}))
    assert (unknown.enabled, unknown.missing) == (False, True)
    no_details = Answers({}, user_details_missing=True)
    assert sdk.evaluate("new_banner", ada, no_details).missing
    assert demo_gateway.records()["membership_lookups"] == [], "the SDK itself asked nothing"


def test_a_failing_sdk_call_is_an_error_outcome(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sdk = make_engine(demo_gateway)._sdk
    outcome = sdk.evaluate("new_banner", {"id": 42}, Answers({}))
    assert outcome.error is True, "the SDK swallows a bad id, but logs an error: seen"
    broken = VwoSdk(sdk._config, lambda send: None)  # never loaded: no client
    with caplog.at_level("ERROR", logger="vwo_heap_middleware"):
        failed = broken.evaluate("new_banner", {"id": "ada@example.com"}, Answers({}))
    assert failed.error is True
    assert (
        SDK_FAILED % ("new_banner", short_hash("ada@example.com", key=sdk._config.log_key))
        in caplog.text
    )
    assert "ada@example.com" not in caplog.text


def test_the_sdk_door_keeps_one_process_object_and_no_other_state() -> None:
    """No module-level mutable state in the SDK door but the one ``PROCESS`` object."""
    import types

    from vwo_heap_middleware.vwo_sdk import client, patches, schema

    for module in (client, patches, schema):
        mutable = [
            name
            for name, value in vars(module).items()
            if not name.startswith("__")
            and isinstance(value, (list, dict, set))
            and not isinstance(value, types.MappingProxyType)
        ]
        assert mutable == [], f"{module.__name__} keeps {mutable}"
    assert isinstance(client.PROCESS, client.SdkProcess)
