"""Each SDK patch against the installed vwo-fme-python-sdk: still needed, and working.

When a test named ``test_stock_sdk_still_*`` fails, the SDK fixed that defect: drop the patch.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.sdk_probe import probe
from tests.support import EngineFactory, visitor
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.vwo_sdk import PATCHES, sdk_version
from vwo_heap_middleware.vwo_sdk.client import PROCESS
from vwo_heap_middleware.vwo_sdk.patches import (
    NO_SPOOL,
    LogTransport,
    _SdkNetworkClient,
    gateway_lookup,
)


def test_stock_sdk_still_never_matches_inlist(demo_gateway: LocalGateway) -> None:
    member = {"id": "ada@example.com", "custom_variables": {"heap_identity": "ada@example.com"}}
    result = probe(demo_gateway.url, "123456", "local-demo-sdk-key", [("premium_checkout", member)])
    assert result["answers"] == [{"enabled": False, "variables": {}}]
    assert demo_gateway.records()["membership_lookups"] == [], (
        "the stock SDK never asks the gateway"
    )


def test_inlist_patch_is_applied_because_the_probe_finds_the_defect() -> None:
    applied = PROCESS.install()
    assert set(applied) == set(PATCHES), "every patch applies to this SDK release"


def test_patched_sdk_matches_inlist(demo_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    engine = make_engine(demo_gateway)
    assert "inlist" in engine.readiness()["sdk_patches"]
    assert engine.readiness()["sdk_version"] == sdk_version()
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
    assert gateway_lookup(PROCESS, query, UrlEnum.ATTRIBUTE_CHECK.value, None) is False


def test_an_event_with_no_engine_to_take_it_is_said(caplog: pytest.LogCaptureFixture) -> None:
    from wingify.packages.network_layer.models.request_model import RequestModel

    saved, PROCESS.event_sink = PROCESS.event_sink, None
    try:
        with caplog.at_level("DEBUG", logger="vwo_heap_middleware"):
            request = RequestModel("h", "POST", "/events/t", {}, {"d": {}}, {}, "http", None)
            answer = _SdkNetworkClient(PROCESS).post(request)
    finally:
        PROCESS.event_sink = saved
    assert answer.get_status_code() == 200
    assert NO_SPOOL in caplog.text


def test_sdk_logs_stay_out_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    LogTransport(None, PROCESS).log("ERROR", "user ada@example.com")
    assert "ada" not in caplog.text
    with caplog.at_level("DEBUG", logger="vwo_heap_middleware.sdk"):
        LogTransport("DEBUG", PROCESS).log("ERROR", "shown when asked")
    assert "shown when asked" in caplog.text


def test_the_sdks_events_go_to_the_spool_and_survive_a_failing_gateway(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    from wingify.packages.network_layer.manager.network_manager import NetworkManager

    engine = make_engine(demo_gateway)
    assert isinstance(NetworkManager.get_instance().client, _SdkNetworkClient)
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
