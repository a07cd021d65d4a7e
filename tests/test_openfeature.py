"""The OpenFeature provider with the real openfeature-sdk, against the local gateway."""

from __future__ import annotations

import asyncio
import json
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
from openfeature.track import TrackingEventDetails

from tests.support import MEMBER, EngineFactory, run_counting_ticks, wait_until
from vwo_heap_middleware import FlagEngine
from vwo_heap_middleware.decision import PROVIDER_NAME
from vwo_heap_middleware.flask import HeapFlags
from vwo_heap_middleware.openfeature import NOT_READY, HeapVWOProvider
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
        "rule": details.flag_metadata.get("rule_key"),
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
    assert (member["reason"], member["variant"]) == ("TARGETING_MATCH", "Rollout-rule-1")
    assert member["rule"] == "heap_segment1", "the rule that decided, in flag_metadata"
    assert other["middleware"] == other["openfeature"] == [False, "none"]
    assert (other["reason"], other["variant"], other["rule"]) == ("DEFAULT", "off", None)
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


TYPED = {
    "account_id": 777,
    "sdk_key": "shop-key",
    "flags": [
        {
            "key": "typed",
            "variables": {"label": "Standard", "limit": 1, "ratio": 0.5, "theme": {"c": "grey"}},
            "rules": [
                {
                    "type": "heap_segment",
                    "segment": "vip",
                    "variables": {
                        "label": "Gold",
                        "limit": 5,
                        "ratio": 1.5,
                        "theme": {"c": "gold"},
                    },
                }
            ],
        }
    ],
}
FIVE_TYPES = [
    ("boolean", "typed", False),
    ("string", "typed.label", "none"),
    ("integer", "typed.limit", 0),
    ("float", "typed.ratio", 0.0),
    ("object", "typed.theme", {}),
]
PEOPLE = ["vip@example.com", "someone@example.com"]


def _seen(details: Any) -> tuple[Any, ...]:
    metadata = dict(details.flag_metadata)
    metadata.pop("cached", None)  # the second resolution of a visitor comes from the cache
    return (details.value, details.variant, details.reason, details.error_code, metadata)


def resolve_all(context: EvaluationContext | None = None) -> list[tuple[Any, ...]]:
    client = api.get_client()
    return [
        _seen(getattr(client, f"get_{kind}_details")(key, default, context))
        for kind, key, default in FIVE_TYPES
    ]


async def resolve_all_async(context: EvaluationContext | None = None) -> list[tuple[Any, ...]]:
    client = api.get_client()
    return [
        _seen(await getattr(client, f"get_{kind}_details_async")(key, default, context))
        for kind, key, default in FIVE_TYPES
    ]


@pytest.fixture
def typed_engine(make_engine: EngineFactory) -> Iterator[FlagEngine]:
    with LocalGateway(compile_flags(TYPED), {"vip": ["vip@example.com"]}) as gateway:
        engine = make_engine(gateway, flags=("typed",))
        api.set_provider_and_wait(HeapVWOProvider(engine))
        yield engine
        engine.close()  # while its gateway still takes the impressions


def test_sync_and_async_resolve_alike_for_five_types(typed_engine: FlagEngine) -> None:
    """Every type, sync and async, outside a request and inside one: the same details."""
    app = FastAPI()
    app.add_middleware(HeapFlagsMiddleware, engine=typed_engine)

    @app.get("/async")
    async def in_async_view() -> list[Any]:
        return await resolve_all_async()

    @app.get("/sync")
    def in_sync_view() -> list[Any]:
        return resolve_all()

    answers: dict[str, list[Any]] = {}
    with TestClient(app) as http:
        for who in PEOPLE:
            context = EvaluationContext(who, {"heap_identity": who})
            outside = resolve_all(context)
            assert asyncio.run(resolve_all_async(context)) == outside
            for view in ("async", "sync"):
                inside = http.get(f"/{view}", headers={"X-Heap-Identity": who}).json()
                assert inside == json.loads(json.dumps(outside)), view
            answers[who] = outside
    vip, other = answers["vip@example.com"], answers["someone@example.com"]
    assert [a[0] for a in vip] == [True, "Gold", 5, 1.5, {"c": "gold"}]
    assert [a[0] for a in other] == [False, "none", 0, 0.0, {}]


@pytest.mark.parametrize(("kind", "key", "default"), FIVE_TYPES)
def test_async_resolution_keeps_the_loop_serving(
    kind: str, key: str, default: Any, make_engine: EngineFactory
) -> None:
    """A new visitor's lookup on a slow gateway: the loop runs other tasks meanwhile."""
    with LocalGateway(compile_flags(TYPED), {"vip": ["vip@example.com"]}) as gateway:
        engine = make_engine(gateway, evaluation_timeout=1.0, lookup_timeout=1.0)
        api.set_provider_and_wait(HeapVWOProvider(engine))
        gateway.faults.set("check_attribute", latency=0.4)
        context = EvaluationContext("vip@example.com", {"heap_identity": "vip@example.com"})

        method = getattr(api.get_client(), f"get_{kind}_details_async")
        details, ticks = run_counting_ticks(lambda: method(key, default, context))
        engine.close()
    assert details.reason == OpenFeatureReason.TARGETING_MATCH
    assert ticks >= 20, f"the loop ran {ticks} ticks in 0.4 s: it was blocked"


def test_track_sends_a_conversion_for_the_context_and_in_a_request(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """OpenFeature's ``track``: the details' value is the revenue, its scalars properties."""
    engine = make_engine(demo_gateway, flags=("premium_checkout",))
    api.set_provider_and_wait(HeapVWOProvider(engine))
    details = TrackingEventDetails(value=42.5).add("currency", "EUR").add("nested", {"no": 1})
    api.get_client().track("purchase", EvaluationContext("ada@example.com"), details)
    app = FastAPI()
    app.add_middleware(HeapFlagsMiddleware, engine=engine)

    @app.post("/buy")
    def buy() -> dict[str, bool]:
        api.get_client().track("purchase")  # the request's visitor: the transaction context
        return {"ok": True}

    with TestClient(app) as client:
        assert client.post("/buy", headers={"X-Heap-Identity": "grace@example.com"}).json()
    assert engine.flush_events(5.0)
    sent = [e for e in demo_gateway.records()["event_log"] if e["name"] == "purchase"]
    assert len(sent) == 2
    props = sent[0]["body"]["d"]["event"]["props"]
    assert props["revenue"] == 42.5 and props["currency"] == "EUR" and "nested" not in props
