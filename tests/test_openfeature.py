"""The OpenFeature provider with the real openfeature-sdk, against the local gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from flask import Flask, g
from openfeature import api, transaction_context
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import Reason as OpenFeatureReason
from openfeature.provider import ProviderStatus

from tests.conftest import MEMBER, EngineFactory, wait_until
from vwo_heap_middleware import FlagEngine
from vwo_heap_middleware.flask import HeapFlags
from vwo_heap_middleware.openfeature import NOT_READY, PROVIDER_NAME, HeapVWOProvider
from vwo_heap_middleware.starlette import HeapFlagsMiddleware
from vwo_heap_middleware.testing.gateway import LocalGateway, compile_flags

NON_MEMBER = {"X-Heap-Identity": "someone@example.com"}


@pytest.fixture(autouse=True)
def clean_openfeature() -> Iterator[None]:
    yield
    api.clear_providers()
    transaction_context.clear_transaction_context_propagator()


@pytest.fixture
def engine(shop_gateway: LocalGateway, make_engine: EngineFactory) -> FlagEngine:
    engine = make_engine(shop_gateway, flags=("premium_checkout",))
    api.set_provider_and_wait(HeapVWOProvider(engine))
    return engine


def both(flags: Any) -> dict[str, Any]:
    """What the middleware decided, beside what the OpenFeature API answers."""
    client = api.get_client()
    details = client.get_boolean_details("premium_checkout", False)
    tier = client.get_string_details("premium_checkout.tier_label", "none")
    return {
        "middleware": [
            flags.enabled("premium_checkout"),
            flags.variable("premium_checkout", "tier_label", "none"),
        ],
        "openfeature": [details.value, tier.value],
        "reason": details.reason,
        "variant": details.variant,
    }


def test_fastapi_answers_equal_the_middlewares(engine: FlagEngine) -> None:
    app = FastAPI()
    app.add_middleware(HeapFlagsMiddleware, engine=engine)

    @app.get("/")
    def index(request: Request) -> dict[str, Any]:
        return both(request.state.flags)

    with TestClient(app) as client:
        member = client.get("/", headers=MEMBER).json()
        other = client.get("/", headers=NON_MEMBER).json()
    assert member["middleware"] == member["openfeature"] == [True, "<b>Gold</b>"]
    assert (member["reason"], member["variant"]) == ("TARGETING_MATCH", "on")
    assert other["middleware"] == other["openfeature"] == [False, "none"]
    assert (other["reason"], other["variant"]) == ("DEFAULT", "off")
    assert engine.stats()["membership_calls"] == 2, "one lookup per visitor: the request's flags"


def test_flask_answers_equal_the_middlewares(engine: FlagEngine) -> None:
    app = Flask(__name__)
    HeapFlags(app, engine=engine)

    @app.get("/")
    def index() -> dict[str, Any]:
        return both(g.flags)

    client = app.test_client()
    member = client.get("/", headers=MEMBER).get_json()
    other = client.get("/", headers=NON_MEMBER).get_json()
    assert member["middleware"] == member["openfeature"] == [True, "<b>Gold</b>"]
    assert other["middleware"] == other["openfeature"] == [False, "none"]


def test_the_transaction_context_is_the_visitor(engine: FlagEngine) -> None:
    app = FastAPI()
    app.add_middleware(HeapFlagsMiddleware, engine=engine)

    @app.get("/")
    def index() -> dict[str, Any]:
        context = api.get_transaction_context()
        return {"targeting_key": context.targeting_key, "attributes": dict(context.attributes)}

    with TestClient(app) as client:
        body = client.get("/", headers=MEMBER).json()
    assert body == {
        "targeting_key": "vip@example.com",
        "attributes": {"heap_identity": "vip@example.com"},
    }


def test_outside_a_request_the_evaluation_context_decides(engine: FlagEngine) -> None:
    client = api.get_client()
    vip = EvaluationContext("vip@example.com", {"heap_identity": "vip@example.com"})
    assert client.get_boolean_value("premium_checkout", False, vip) is True
    vwo_style = EvaluationContext(
        attributes={
            "id": "vip@example.com",
            "heap_identity": "vip@example.com",
            "key": "tier_label",
        }
    )
    assert client.get_string_value("premium_checkout", "none", vwo_style) == "<b>Gold</b>"
    stranger = EvaluationContext("x@example.com", {"heap_identity": "x@example.com"})
    assert client.get_boolean_details("premium_checkout", False, stranger).reason == "DEFAULT"
    off = client.get_string_details("premium_checkout.tier_label", "none", stranger)
    assert (off.value, off.reason) == ("none", OpenFeatureReason.DISABLED)


@pytest.mark.parametrize(
    ("call", "key", "default", "error"),
    [
        ("get_boolean_details", "no_such_flag", False, ErrorCode.FLAG_NOT_FOUND),
        ("get_string_details", "premium_checkout.no_such_variable", "d", ErrorCode.FLAG_NOT_FOUND),
        ("get_integer_details", "premium_checkout.tier_label", 3, ErrorCode.TYPE_MISMATCH),
        ("get_string_details", "premium_checkout", "d", ErrorCode.TYPE_MISMATCH),
    ],
)
def test_errors_have_codes_and_give_the_default(
    engine: FlagEngine, call: str, key: str, default: Any, error: ErrorCode
) -> None:
    vip = EvaluationContext("vip@example.com", {"heap_identity": "vip@example.com"})
    details = getattr(api.get_client(), call)(key, default, vip)
    assert (details.value, details.error_code, details.reason) == (default, error, "ERROR")


def test_no_targeting_key_is_an_error(engine: FlagEngine) -> None:
    details = api.get_client().get_boolean_details("premium_checkout", True, EvaluationContext())
    assert (details.value, details.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)


def test_metadata_events_and_status(shop_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    shop_gateway.refuse_connections()
    engine = make_engine(shop_gateway, ready=False, settings_refresh_interval=1.0)
    seen: list[str] = []

    def ready(details: EventDetails) -> None:
        seen.append("ready")

    def changed(details: EventDetails) -> None:
        seen.append("changed")

    api.add_handler(ProviderEvent.PROVIDER_READY, ready)
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed)
    try:
        with pytest.raises(ProviderNotReadyError, match=NOT_READY):
            api.set_provider_and_wait(HeapVWOProvider(engine, ready_wait=0.2))
        seen.clear()  # a handler added while the old provider was ready ran at once
        client = api.get_client()
        assert client.get_provider_status() is ProviderStatus.ERROR
        assert api.get_provider_metadata().name == PROVIDER_NAME
        shop_gateway.accept_connections()
        wait_until(lambda: client.get_provider_status() is ProviderStatus.READY, what="ready")
        other = {"account_id": 777, "sdk_key": "shop-key", "flags": [{"key": "other"}]}
        shop_gateway.set_settings(compile_flags(other))
        wait_until(lambda: "changed" in seen, what="a configuration-changed event")
    finally:
        api.remove_handler(ProviderEvent.PROVIDER_READY, ready)
        api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed)
    assert seen == ["ready", "changed"]


def test_needs_an_engine() -> None:
    with pytest.raises(TypeError, match="FlagEngine"):
        HeapVWOProvider("engine")  # type: ignore[arg-type]
