"""The ASGI middleware, requires_flag and templates on Starlette and FastAPI (in-process)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.templating import Jinja2Templates
from starlette.websockets import WebSocket

from tests.support import MEMBER, EngineFactory, v5
from vwo_heap_middleware import FlagDecision, FlagEngine, FlagRequired, get_flags, requires_flag
from vwo_heap_middleware.fastapi import requires_flag_dependency
from vwo_heap_middleware.guards import NO_MIDDLEWARE
from vwo_heap_middleware.starlette import HeapFlagsMiddleware, flags_context
from vwo_heap_middleware.testing.gateway import LocalGateway


@pytest.fixture
def engine(shop_gateway: LocalGateway, make_engine: EngineFactory) -> FlagEngine:
    return make_engine(shop_gateway, flags=("premium_checkout", "new_banner"))


def state(request: Request) -> JSONResponse:
    flags = request.state.flags
    assert id(get_flags()) == id(flags)
    return JSONResponse({"identity": flags.identity, "flags": flags.to_dict()})


def starlette_app(engine: FlagEngine, tmp_path: Path | None = None) -> Starlette:
    async def sync_guard_target(request: Request) -> Response:
        return PlainTextResponse("premium")

    @requires_flag("premium_checkout")
    async def premium(request: Request) -> Response:
        return PlainTextResponse("premium")

    @requires_flag("premium_checkout")
    def premium_sync(request: Request) -> Response:
        return PlainTextResponse("premium sync")

    @requires_flag("premium_checkout", status=403)
    async def forbidden(request: Request) -> Response:
        return PlainTextResponse("premium")

    @requires_flag("premium_checkout", redirect_to="/pricing")
    async def redirected(request: Request) -> Response:
        return PlainTextResponse("premium")

    @requires_flag(
        "premium_checkout",
        handler=lambda request: PlainTextResponse(f"upsell {request.url.path}", 402),
    )
    async def handled(request: Request) -> Response:
        return PlainTextResponse("premium")

    async def plain(request: Request) -> Response:
        return PlainTextResponse("no flags read")

    async def own_cache_policy(request: Request) -> Response:
        request.state.flags.enabled("premium_checkout")
        return PlainTextResponse("x", headers={"Cache-Control": "no-store"})

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("scope" + str("flags" in websocket.scope.get("state", {})))
        await websocket.close()

    routes = [
        Route("/state", state),
        Route("/premium", premium),
        Route("/premium-sync", premium_sync),
        Route("/forbidden", forbidden),
        Route("/redirected", redirected),
        Route("/handled", handled),
        Route("/plain", plain),
        Route("/own-cache-policy", own_cache_policy),
        WebSocketRoute("/ws", echo),
    ]
    if tmp_path is not None:
        (tmp_path / "page.html").write_text(
            "{{ flags.variable('new_banner', 'text', 'x') }}|{{ flags.variable('premium_checkout', 'tier_label', '-') }}"
        )
        templates = Jinja2Templates(directory=tmp_path, context_processors=[flags_context])

        async def page(request: Request) -> Response:
            return templates.TemplateResponse(request, "page.html")

        routes.append(Route("/page", page))
    app = Starlette(routes=routes)
    app.add_middleware(HeapFlagsMiddleware, engine=engine)
    return app


def test_request_state_flags(engine: FlagEngine) -> None:
    with TestClient(starlette_app(engine)) as client:
        body = client.get("/state", headers=MEMBER).json()
    assert body["identity"] == "vip@example.com"
    assert body["flags"]["premium_checkout"] == {
        "enabled": True,
        "variables": {"tier_label": "<b>Gold</b>"},
        "reason": "targeted",
    }


def test_vary_only_when_flags_were_read(engine: FlagEngine) -> None:
    with TestClient(starlette_app(engine)) as client:
        read = client.get("/state", headers=MEMBER)
        unread = client.get("/plain", headers=MEMBER)
        own = client.get("/own-cache-policy", headers=MEMBER)
    assert read.headers["vary"] == "Cookie, X-Heap-Identity"
    assert read.headers["cache-control"] == "private"
    assert "vary" not in unread.headers and "cache-control" not in unread.headers
    assert own.headers["cache-control"] == "no-store", "the app's own policy stays"
    assert "server-timing" not in read.headers and "x-flags" not in read.headers


def test_opt_in_debug_headers(shop_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    engine = make_engine(
        shop_gateway, flags=("premium_checkout",), server_timing=True, debug_header=True
    )
    with TestClient(starlette_app(engine)) as client:
        response = client.get("/plain", headers=MEMBER)
        again = client.get("/plain", headers=MEMBER)
    details = "rule=heap_segment1;variation=Rollout-rule-1;segment=vip:member"
    assert response.headers["x-flags"] == f"premium_checkout=on;targeted;native;{details}"
    assert again.headers["x-flags"] == f"premium_checkout=on;targeted;native;cached;{details}"
    assert response.headers["server-timing"].startswith("flags;dur=")


@pytest.mark.parametrize(
    ("path", "headers", "status", "text"),
    [
        ("/premium", MEMBER, 200, "premium"),
        ("/premium", {}, 404, None),
        ("/premium-sync", MEMBER, 200, "premium sync"),
        ("/premium-sync", {"X-Heap-Identity": "other@example.com"}, 404, None),
        ("/forbidden", {}, 403, None),
        ("/handled", {}, 402, "upsell /handled"),
    ],
)
def test_requires_flag_on_starlette(
    engine: FlagEngine, path: str, headers: dict[str, str], status: int, text: str | None
) -> None:
    with TestClient(starlette_app(engine)) as client:
        response = client.get(path, headers=headers)
    assert response.status_code == status
    if text is not None:
        assert response.text == text


def test_requires_flag_redirects_to_a_relative_path(engine: FlagEngine) -> None:
    with TestClient(starlette_app(engine)) as client:
        response = client.get("/redirected", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/pricing"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example", "/\\evil.example", "pricing", "/a\r\nSet-Cookie: x"],
)
def test_no_open_redirects(target: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        requires_flag("x", redirect_to=target)
    with pytest.raises(ValueError, match="relative path"):
        requires_flag_dependency("x", redirect_to=target)


def test_template_output_is_escaped(engine: FlagEngine, tmp_path: Path) -> None:
    with TestClient(starlette_app(engine, tmp_path)) as client:
        text = client.get("/page", headers=MEMBER).text
    assert text == "&lt;script&gt;alert(1)&lt;/script&gt;|&lt;b&gt;Gold&lt;/b&gt;"


def test_lifespan_starts_and_closes_the_engine(shop_gateway: LocalGateway) -> None:
    from vwo_heap_middleware import Config

    engine = FlagEngine(Config(account_id="777", sdk_key="shop-key", gateway_url=shop_gateway.url))
    with TestClient(starlette_app(engine)) as client:
        assert engine.ready, "start-up waited for settings"
        assert client.get("/premium", headers=MEMBER).status_code == 200
    assert engine._closed


def test_works_without_lifespan(engine: FlagEngine) -> None:
    client = TestClient(starlette_app(engine))  # no context manager: no lifespan events
    assert client.get("/premium", headers=MEMBER).status_code == 200


def test_websockets_pass_through(engine: FlagEngine) -> None:
    with TestClient(starlette_app(engine)) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "scopeFalse"


@pytest.mark.parametrize(
    "headers",
    [
        {"Cookie": 'a={"x":1}; b="; ' + v5("x" * 300)},
        {"Cookie": "_hp5_meta.1=%FF%FE%ZZ" + "[" * 3000},
        {"X-Heap-Identity": "null"},
        {"Cookie": "_hp2_id.1=" + "A" * 10000},
        {"Cookie": "_hp5_meta.1=%7B%22identity%22%3A%22x%5Cud800y%22%7D"},  # a lone surrogate
    ],
)
def test_bad_input_is_an_anonymous_visitor_not_an_error(
    engine: FlagEngine, headers: dict[str, str]
) -> None:
    with TestClient(starlette_app(engine)) as client:
        response = client.get("/state", headers=headers)
    assert response.status_code == 200
    assert response.json()["identity"] is None


def test_async_and_sync_resolvers(shop_gateway: LocalGateway, make_engine: EngineFactory) -> None:
    async def resolver(request: Request) -> str | None:
        return request.query_params.get("as")

    engine = make_engine(
        shop_gateway,
        flags=("premium_checkout",),
        identity_resolver=resolver,
        trust_client_identity=False,
    )
    with TestClient(starlette_app(engine)) as client:
        assert client.get("/state?as=vip@example.com").json()["identity"] == "vip@example.com"
        assert client.get("/state", headers=MEMBER).json()["identity"] is None, (
            "client identity is ignored"
        )


def test_failing_resolver_does_not_fail_the_request(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    def resolver(request: Request) -> str:
        raise RuntimeError("session store down")

    engine = make_engine(shop_gateway, identity_resolver=resolver)
    with TestClient(starlette_app(engine)) as client:
        assert client.get("/state", headers=MEMBER).json()["identity"] == "vip@example.com"


def fastapi_app(engine: FlagEngine) -> FastAPI:
    app = FastAPI()
    app.add_middleware(HeapFlagsMiddleware, engine=engine)

    @app.get("/items/{item_id}")
    @requires_flag("premium_checkout")
    async def item(item_id: int, q: str = "none") -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.get("/sync/{item_id}")
    @requires_flag("premium_checkout")
    def sync_item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id}

    @app.get("/depends")
    async def depends(
        decision: Annotated[FlagDecision, Depends(requires_flag_dependency("premium_checkout"))],
    ) -> dict[str, Any]:
        return {"tier": decision.variable("tier_label")}

    @app.get("/depends-redirect")
    async def depends_redirect(
        decision: Annotated[
            FlagDecision,
            Depends(requires_flag_dependency("premium_checkout", redirect_to="/pricing")),
        ],
    ) -> dict[str, str]:
        return {}

    return app


@pytest.mark.parametrize(
    ("path", "headers", "status", "body"),
    [
        ("/items/7?q=x", MEMBER, 200, {"item_id": 7, "q": "x"}),
        ("/items/7", {}, 404, None),
        ("/items/abc", MEMBER, 422, None),
        ("/sync/3", MEMBER, 200, {"item_id": 3}),
        ("/sync/3", {}, 404, None),
        ("/depends", MEMBER, 200, {"tier": "<b>Gold</b>"}),
        ("/depends", {}, 404, None),
    ],
)
def test_fastapi_path_operations(
    engine: FlagEngine, path: str, headers: dict[str, str], status: int, body: Any
) -> None:
    with TestClient(fastapi_app(engine)) as client:
        response = client.get(path, headers=headers)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body


def test_fastapi_keeps_the_signature_for_openapi(engine: FlagEngine) -> None:
    with TestClient(fastapi_app(engine)) as client:
        spec = client.get("/openapi.json").json()
    params = {p["name"] for p in spec["paths"]["/items/{item_id}"]["get"]["parameters"]}
    assert params == {"item_id", "q"}


def test_fastapi_dependency_redirect(engine: FlagEngine) -> None:
    with TestClient(fastapi_app(engine)) as client:
        response = client.get("/depends-redirect", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/pricing"


def test_requires_flag_without_middleware_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def view(request: Request) -> Response:
        ran.append(request.url.path)
        return PlainTextResponse("x")

    app = Starlette(routes=[Route("/p", requires_flag("premium_checkout")(view))])
    with TestClient(app) as client, pytest.raises(FlagRequired) as refused:
        client.get("/p")
    assert (refused.value.key, refused.value.status) == ("premium_checkout", 404)
    assert ran == [], "no decision, no page"
    assert NO_MIDDLEWARE % "premium_checkout" in caplog.text


def test_middleware_needs_an_engine() -> None:
    with pytest.raises(TypeError, match="engine=FlagEngine"):
        HeapFlagsMiddleware(Starlette(), engine="nope")  # type: ignore[arg-type]


def test_router_answers_with_the_debug_header_vary_too(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(shop_gateway, flags=("premium_checkout",), debug_header=True)
    with TestClient(starlette_app(engine)) as client:
        missing = client.get("/no-such-page", headers=MEMBER)
    assert missing.status_code == 404
    assert missing.headers["x-flags"].startswith("premium_checkout=on;targeted;native;rule=")
    assert missing.headers["vary"] == "Cookie, X-Heap-Identity"
    assert missing.headers["cache-control"] == "private"
