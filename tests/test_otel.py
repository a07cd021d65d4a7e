"""OpenTelemetry with the real SDK's in-memory exporters: span events, client spans, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support import MEMBER, EngineFactory
from vwo_heap_middleware import FlagEngine
from vwo_heap_middleware.decision import PROVIDER_NAME
from vwo_heap_middleware.identity import short_hash
from vwo_heap_middleware.otel import EVALUATION_EVENT
from vwo_heap_middleware.starlette import HeapFlagsMiddleware
from vwo_heap_middleware.testing.gateway import LocalGateway

SPANS = InMemorySpanExporter()
READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def telemetry() -> None:
    """One SDK per process (OpenTelemetry allows setting its providers once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SPANS))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))


@pytest.fixture(autouse=True)
def fresh_spans() -> Iterator[None]:
    SPANS.clear()
    yield


class ServerSpan:
    """What OpenTelemetry's ASGI instrumentation does: a span around each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with trace.get_tracer("test").start_as_current_span(
            "GET " + scope["path"], kind=trace.SpanKind.SERVER
        ):
            await self.app(scope, receive, send)


def shop(engine: FlagEngine) -> Starlette:
    async def page(request: Request) -> PlainTextResponse:
        flags = request.state.flags
        return PlainTextResponse(f"{flags.enabled('premium_checkout')} {flags.enabled('nope')}")

    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(HeapFlagsMiddleware, engine=engine)
    app.add_middleware(ServerSpan)
    return app


def metric(name: str) -> list[Any]:
    data = READER.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for m in scope.metrics
        if m.name == name
        for point in m.data.data_points
    ]


def test_each_flag_read_is_an_event_on_the_request_span(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(shop_gateway, otel=True, otel_context_id=True, flags=("new_banner",))
    with TestClient(shop(engine)) as client:
        assert client.get("/", headers=MEMBER).text == "True False"
    server = [s for s in SPANS.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert len(server) == 1
    events = {
        str((e.attributes or {})["feature_flag.key"]): dict(e.attributes or {})
        for e in server[0].events
        if e.name == EVALUATION_EVENT
    }
    assert set(events) == {"premium_checkout", "nope"}, "read ones only: new_banner was not read"
    assert events["premium_checkout"] == {
        "feature_flag.key": "premium_checkout",
        "feature_flag.provider.name": PROVIDER_NAME,
        "feature_flag.result.variant": "Rollout-rule-1",
        "feature_flag.result.value": True,
        "feature_flag.result.reason": "targeting_match",
        "feature_flag.version": engine.readiness()["revision"],
        "feature_flag.context.id": short_hash("vip@example.com", key=engine.config.log_key),
        "vwo_heap.rule.key": "heap_segment1",
        "vwo_heap.rule.type": "rollout",
    }
    assert events["nope"]["error.type"] == "flag_not_found"
    assert "vip@example.com" not in str(events), "never the raw identity"


def test_gateway_calls_are_client_spans(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(shop_gateway, otel=True, flags=("premium_checkout",))
    with TestClient(shop(engine)) as client:
        client.get("/", headers={"X-Heap-Identity": "new@example.com"})
    clients = [s for s in SPANS.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    assert [s.name for s in clients] == ["vwo gateway settings", "vwo gateway membership"]
    assert clients[1].attributes == {"vwo_heap.gateway.call": "membership"}
    shop_gateway.faults.set("check_attribute", status=503)
    SPANS.clear()
    with TestClient(shop(engine)) as client:
        client.get("/", headers={"X-Heap-Identity": "failing@example.com"})
    failed = [s for s in SPANS.get_finished_spans() if s.name == "vwo gateway membership"]
    assert [s.status.status_code for s in failed] == [trace.StatusCode.ERROR]


def test_metrics_move(shop_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    engine = make_engine(shop_gateway, otel=True, flags=("premium_checkout",))
    before = sum(p.value for p in metric("vwo_heap.decisions"))
    with TestClient(shop(engine)) as client:  # read while the lifespan keeps the engine open
        for _ in range(3):
            client.get("/", headers=MEMBER)
        decisions = metric("vwo_heap.decisions")
        assert sum(p.value for p in decisions) - before >= 6, "two flags a request, 3 requests"
        reasons = {
            (p.attributes["feature_flag.key"], p.attributes["vwo_heap.reason"]) for p in decisions
        }
        assert ("premium_checkout", "targeted") in reasons
        assert [p.value for p in metric("vwo_heap.gateway.circuit_open")] == [0]
        ratio = [p.value for p in metric("vwo_heap.decision_cache.hit_ratio")]
        assert ratio == [pytest.approx(2 / 6)], "premium_checkout cached twice of six decisions"
        assert metric("vwo_heap.gateway.duration")
        events = {p.attributes["vwo_heap.event.state"]: p.value for p in metric("vwo_heap.events")}
        assert set(events) == {"sent", "dropped", "held"}
        assert metric("vwo_heap.settings.age")[0].value >= 0
    assert metric("vwo_heap.gateway.circuit_open") == [], "a closed engine reports nothing"


def test_off_unless_asked(shop_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    engine = make_engine(shop_gateway, flags=("premium_checkout",))
    with TestClient(shop(engine)) as client:
        client.get("/", headers=MEMBER)
    server = [s for s in SPANS.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert [e.name for e in server[0].events] == []
