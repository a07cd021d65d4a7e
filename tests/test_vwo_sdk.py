"""Each SDK patch against the installed vwo-fme-python-sdk: still needed, and working.

When a test named ``test_stock_sdk_still_*`` fails, the SDK fixed that defect: drop the patch.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.conftest import EngineFactory, visitor
from tests.sdk_probe import probe
from vwo_heap_middleware import vwo_sdk
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.visitor import short_hash


def test_stock_sdk_still_never_matches_inlist(demo_gateway: LocalGateway) -> None:
    member = {"id": "ada@example.com", "custom_variables": {"heap_identity": "ada@example.com"}}
    result = probe(demo_gateway.url, "123456", "local-demo-sdk-key", [("premium_checkout", member)])
    assert result["answers"] == [{"enabled": False, "variables": {}}]
    assert demo_gateway.records()["membership_lookups"] == [], (
        "the stock SDK never asks the gateway"
    )


def test_inlist_patch_is_applied_because_the_probe_finds_the_defect() -> None:
    applied = vwo_sdk.install()
    assert set(applied) == set(vwo_sdk.PATCHES), "every patch applies to this SDK release"


def test_patched_sdk_matches_inlist(demo_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    engine = make_engine(demo_gateway)
    assert "inlist" in engine.readiness()["sdk_patches"]
    assert engine.readiness()["sdk_version"] == vwo_sdk.sdk_version()
    assert engine.decide(visitor(engine.config, "ada@example.com"), ["premium_checkout"])[
        "premium_checkout"
    ].enabled


def test_stock_sdk_still_validates_settings_on_every_call(
    demo_gateway: LocalGateway, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wingify.services import settings_manager

    engine = make_engine(demo_gateway, decision_ttl=0)
    validations: list[int] = []
    stock_validator = settings_manager.jsonschema.Draft7Validator

    def counting_validator(*args: Any, **kwargs: Any) -> Any:
        validations.append(1)
        return stock_validator(*args, **kwargs)

    monkeypatch.setattr(settings_manager.jsonschema, "Draft7Validator", counting_validator)
    for n in range(20):
        engine.decide(visitor(engine.config, f"user{n}@example.com"), ["new_banner"])
    assert validations == [], (
        "validate_once: the settings object was validated when loaded, not per call"
    )
    fresh = dict(engine._sdk._client.original_settings)
    assert settings_manager.SettingsManager.is_settings_valid(fresh)
    assert validations == [1], "a new settings object is validated (once)"


def test_events_go_through_one_sender_thread(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = make_engine(demo_gateway)
    for n in range(30):
        engine.decide(visitor(engine.config, f"user{n}@example.com"), ["new_banner"])
    assert engine.flush_events()
    names = [t.name for t in threading.enumerate() if t.ident not in before]
    assert not [n for n in names if n.startswith("ThreadPoolExecutor-")], "no thread pool per event"
    assert names.count("vwo-heap-events") == 1
    assert demo_gateway.records()["events"]["vwo_variationShown"] == 30


def test_no_sdk_polling_timer_keeps_the_process_alive(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    before = set(threading.enumerate())  # other libraries' threads are theirs
    make_engine(demo_gateway)
    stray = [
        t
        for t in set(threading.enumerate()) - before
        if isinstance(t, threading.Timer)
        or (
            not t.daemon
            and t is not threading.main_thread()
            and not t.name.startswith("vwo-heap-lookup")
        )
    ]
    assert [t.name for t in stray] == []


def test_gateway_lookup_outside_evaluate_never_touches_the_network() -> None:
    from wingify.enums.url_enum import UrlEnum

    query = {"listId": "l", "attribute": "a"}
    assert vwo_sdk.gateway_lookup(query, UrlEnum.ATTRIBUTE_CHECK.value, None) is False


def test_evaluate_answers_the_sdks_lookups_and_says_what_was_missing(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    sdk = make_engine(demo_gateway)._sdk
    ada = {"id": "ada@example.com", "custom_variables": {"heap_identity": "ada@example.com"}}
    member = vwo_sdk.Answers({("heap_premium_users", "ada@example.com"): True})
    given = sdk.evaluate("premium_checkout", ada, member, "ada@example.com")
    assert (given.enabled, given.missing, given.error) == (True, False, False)
    assert given.variables == {"tier_label": "Premium", "discount_pct": 15}
    unknown = sdk.evaluate("premium_checkout", ada, vwo_sdk.Answers({}), "ada@example.com")
    assert (unknown.enabled, unknown.missing) == (False, True)
    no_details = vwo_sdk.Answers({}, user_details_missing=True)
    assert sdk.evaluate("new_banner", ada, no_details, "ada@example.com").missing
    assert demo_gateway.records()["membership_lookups"] == [], "the SDK itself asked nothing"


def test_an_event_with_no_engine_to_take_it_is_said(caplog: pytest.LogCaptureFixture) -> None:
    from wingify.packages.network_layer.models.request_model import RequestModel

    saved = list(vwo_sdk._event_sink)
    vwo_sdk._event_sink.clear()
    try:
        with caplog.at_level("DEBUG", logger="vwo_heap_middleware"):
            request = RequestModel("h", "POST", "/events/t", {}, {"d": {}}, {}, "http", None)
            answer = vwo_sdk._SdkNetworkClient().post(request)
    finally:
        vwo_sdk._event_sink[:] = saved
    assert answer.get_status_code() == 200
    assert vwo_sdk.NO_SPOOL in caplog.text


def test_settings_problem_names_the_place() -> None:
    assert vwo_sdk.settings_problem([]) == "settings must be a JSON object"
    problem = vwo_sdk.settings_problem(
        {"version": 1, "accountId": 1, "features": "x", "campaigns": []}
    )
    assert problem is not None and problem.startswith("not valid VWO settings at features")


def test_a_failing_sdk_call_is_an_error_outcome(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sdk = make_engine(demo_gateway)._sdk
    outcome = sdk.evaluate("new_banner", {"id": 42}, vwo_sdk.Answers({}), "user-42")
    assert outcome.error is True, "the SDK swallows a bad id, but logs an error: seen"
    broken = vwo_sdk.VwoSdk(sdk._config, lambda send: None)  # never loaded: no client
    with caplog.at_level("ERROR", logger="vwo_heap_middleware"):
        failed = broken.evaluate("new_banner", {"id": "x"}, vwo_sdk.Answers({}), "ada@example.com")
    assert failed.error is True
    assert (
        vwo_sdk.SDK_FAILED % ("new_banner", short_hash("ada@example.com", key=sdk._config.log_key))
        in caplog.text
    )
    assert "ada@example.com" not in caplog.text


def test_sdk_logs_stay_out_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    vwo_sdk.LogTransport(None).log("ERROR", "user ada@example.com")
    assert "ada" not in caplog.text
    with caplog.at_level("DEBUG", logger="vwo_heap_middleware.sdk"):
        vwo_sdk.LogTransport("DEBUG").log("ERROR", "shown when asked")
    assert "shown when asked" in caplog.text


def test_the_sdks_events_go_to_the_spool_and_survive_a_failing_gateway(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    engine = make_engine(demo_gateway)
    assert isinstance(NetworkManager.get_instance().client, vwo_sdk._SdkNetworkClient)
    assert engine.flush_events()
    demo_gateway.reset_records()
    demo_gateway.faults.set("batch_events", status=503)
    started = time.monotonic()
    engine.decide(visitor(engine.config, "fail@example.com"), ["new_banner"])
    assert time.monotonic() - started < 0.5, "no network on the request path"
    assert not engine.flush_events(timeout=0.5), "kept while the gateway fails"
    demo_gateway.faults.clear()
    assert engine.flush_events(timeout=5.0)
    assert demo_gateway.records()["events"] == {"vwo_variationShown": 1}, "sent once"
