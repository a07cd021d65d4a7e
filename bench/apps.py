"""The benchmark page in every case, for Starlette (uvicorn), Flask and plain WSGI (gunicorn).

``BENCH_CASE`` picks the case: ``bare`` (no flags), ``seed`` (a hand-written middleware calling
the stock SDK's ``get_flag`` per flag per request with the seed's context, as a user following
VWO's guide would), ``middleware`` (this library), or a peer deciding the same two flags for the
same visitors from local data: ``growthbook`` (a GrowthBook instance per request, as its docs
do it in web apps) and ``launchdarkly`` (one client with TestData, events off: there is no
LaunchDarkly service here). The gateway comes from the environment.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CASE = os.environ.get("BENCH_CASE", "bare")


class GcPauses:
    """The garbage collector's pauses in this server, from ``gc.callbacks``: read (and reset)
    at ``/gc`` before and after each case."""

    def __init__(self) -> None:
        self._started = 0.0
        self.frozen = False  # gc.freeze() called (``ready_now``)
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> dict[str, float]:
        seen = dict(getattr(self, "seen", {}))
        self.seen = {"count": 0, "total_ms": 0.0, "longest_ms": 0.0, "full": 0, "full_ms": 0.0}
        return seen

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = (time.perf_counter() - self._started) * 1000
        seen = self.seen
        seen["count"] += 1
        seen["total_ms"] += took
        seen["longest_ms"] = max(seen["longest_ms"], took)
        if info.get("generation") == 2:
            seen["full"] += 1
            seen["full_ms"] = max(seen["full_ms"], took)


PAUSES = GcPauses()


def ready_now(ready: bool) -> bool:
    """``/healthz``'s answer; with ``BENCH_GC_FREEZE`` (``--gc-freeze``), the first ready one
    calls ``gc.freeze()``: start-up is over, as Reliability documents for production."""
    if ready and os.environ.get("BENCH_GC_FREEZE") and not PAUSES.frozen:
        PAUSES.frozen = True
        gc.freeze()
    return ready


FLAGS = ("premium_checkout", "new_banner")
PAGE = (
    "<!doctype html><title>Shop</title>"
    "<div style='background:{color}'>{text}</div><p>{checkout}</p>"
)


def render(banner: tuple[bool, dict[str, Any]], premium: bool) -> str:
    enabled, variables = banner
    return PAGE.format(
        color=variables.get("color", "#444444") if enabled else "#444444",
        text=variables.get("text", "Welcome") if enabled else "Welcome",
        checkout="Premium checkout" if premium else "Standard checkout",
    )


BANNER_OFF = {"text": "Welcome", "color": "#444444"}
BANNER_ON = {"text": "Welcome back!", "color": "#0a7d4f"}
Decide = Callable[[str | None], tuple[tuple[bool, dict[str, Any]], bool]]


def members() -> list[str]:
    """The bench segment's members, as the peers get them (the gateway has the same list)."""
    segments = json.loads((Path(__file__).parent / "segments.json").read_text())
    return list(segments["heap_premium_users"])


def growthbook_peer() -> Decide:
    from growthbook import GrowthBook

    features = {
        "premium_checkout": {
            "defaultValue": False,
            "rules": [{"condition": {"id": {"$in": members()}}, "force": True}],
        },
        "new_banner": {
            "defaultValue": BANNER_OFF,
            "rules": [{"force": BANNER_ON, "coverage": 1.0, "hashAttribute": "id"}],
        },
    }

    def decide(identity: str | None) -> tuple[tuple[bool, dict[str, Any]], bool]:
        gb = GrowthBook(attributes={"id": identity or ""}, features=features)
        try:
            banner = gb.get_feature_value("new_banner", BANNER_OFF)
            return (banner != BANNER_OFF, banner), gb.is_on("premium_checkout")
        finally:
            gb.destroy()

    return decide


def launchdarkly_peer() -> Decide:
    from ldclient import Context, LDClient
    from ldclient.config import Config as LDConfig
    from ldclient.integrations.test_data import TestData

    data = TestData.data_source()
    premium = data.flag("premium_checkout").boolean_flag().fallthrough_variation(False)
    data.update(premium.if_match("key", *members()).then_return(True))
    data.update(data.flag("new_banner").variations(BANNER_OFF, BANNER_ON).fallthrough_variation(1))
    client = LDClient(LDConfig("bench-sdk-key", update_processor_class=data, send_events=False))

    def decide(identity: str | None) -> tuple[tuple[bool, dict[str, Any]], bool]:
        context = Context.create(identity or "anonymous")
        banner = client.variation("new_banner", context, BANNER_OFF)
        return (banner != BANNER_OFF, banner), bool(
            client.variation("premium_checkout", context, False)
        )

    return decide


PEERS: dict[str, Callable[[], Decide]] = {
    "growthbook": growthbook_peer,
    "launchdarkly": launchdarkly_peer,
}


def seed_client() -> Any:
    """``vwo.init`` exactly as the seed does it (gateway service configured), stock SDK."""
    import vwo

    return vwo.init(
        {
            "account_id": os.environ["VWO_ACCOUNT_ID"],
            "sdk_key": os.environ["VWO_SDK_KEY"],
            "gateway_service": {"url": os.environ["VWO_GATEWAY_URL"]},
            "logger": {"level": "ERROR"},
        }
    )


def seed_context(identity: str | None, user_agent: str, ip_address: str) -> dict[str, Any]:
    """The seed's context in the Python SDK's keys, with its custom variable, UA and IP."""
    return {
        "id": identity or "anonymous",
        "custom_variables": {"heap_identity": identity or ""},
        "user_agent": user_agent,
        "ip_address": ip_address,
    }


def seed_flags(client: Any, context: dict[str, Any]) -> dict[str, tuple[bool, dict[str, Any]]]:
    decisions = {}
    for key in FLAGS:
        flag = client.get_flag(key, context)
        decisions[key] = (flag.is_enabled(), {v["key"]: v["value"] for v in flag.get_variables()})
    return decisions


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send

    engine = None

    async def page(request: Request) -> HTMLResponse:
        if CASE == "bare":
            return HTMLResponse(render((False, {}), False))
        if CASE == "seed":
            decisions = request.scope["decided"]
            return HTMLResponse(render(decisions["new_banner"], decisions["premium_checkout"][0]))
        if CASE in PEERS:
            return HTMLResponse(render(*request.scope["decided"]))
        flags = request.state.flags
        banner = flags["new_banner"]
        return HTMLResponse(
            render((banner.enabled, dict(banner.variables)), flags.enabled("premium_checkout"))
        )

    async def healthz(request: Request) -> PlainTextResponse:
        ready = ready_now(engine is None or engine.ready)
        return PlainTextResponse("ok" if ready else "loading", status_code=200 if ready else 503)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(engine.stats() if engine is not None else {})

    async def gc_pauses(request: Request) -> JSONResponse:
        return JSONResponse(PAUSES.reset())

    app: Any = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/stats", stats),
            Route("/gc", gc_pauses),
        ]
    )
    if CASE == "seed" or CASE in PEERS:
        if CASE == "seed":
            client = seed_client()

            def decide(identity: str | None, headers: dict[bytes, bytes], peer: str) -> Any:
                user_agent = headers.get(b"user-agent", b"").decode()
                return seed_flags(client, seed_context(identity, user_agent, peer))

        else:
            peer_decide = PEERS[CASE]()

            def decide(identity: str | None, headers: dict[bytes, bytes], peer: str) -> Any:
                return peer_decide(identity)

        class DecidingMiddleware:
            """Decides the flags the seed's or a peer's way into ``scope["decided"]``."""

            def __init__(self, app: ASGIApp) -> None:
                self.app = app

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http":
                    headers = dict(scope["headers"])
                    identity = headers.get(b"x-heap-identity", b"").decode() or None
                    scope["decided"] = decide(identity, headers, scope["client"][0])
                await self.app(scope, receive, send)

        app = DecidingMiddleware(app)
    elif CASE == "middleware":
        from vwo_heap_middleware import Config, FlagEngine
        from vwo_heap_middleware.starlette import HeapFlagsMiddleware

        engine = FlagEngine(Config.from_env())
        app.add_middleware(HeapFlagsMiddleware, engine=engine)
    return app


def flask_app() -> Any:
    from flask import Flask, g, request

    app = Flask(__name__)
    engine = None
    if CASE == "seed":
        client = seed_client()

        @app.before_request
        def seed() -> None:
            context = seed_context(
                request.headers.get("X-Heap-Identity"),
                request.headers.get("User-Agent", ""),
                request.remote_addr or "",
            )
            g.seed_flags = seed_flags(client, context)

    elif CASE in PEERS:
        decide = PEERS[CASE]()

        @app.before_request
        def peer() -> None:
            g.peer_flags = decide(request.headers.get("X-Heap-Identity"))

    elif CASE == "middleware":
        from vwo_heap_middleware import Config, FlagEngine
        from vwo_heap_middleware.flask import HeapFlags

        engine = FlagEngine(Config.from_env())
        HeapFlags(app, engine=engine)

    @app.get("/")
    def page() -> str:
        if CASE == "bare":
            return render((False, {}), False)
        if CASE == "seed":
            return render(g.seed_flags["new_banner"], g.seed_flags["premium_checkout"][0])
        if CASE in PEERS:
            return render(*g.peer_flags)
        banner = g.flags["new_banner"]
        return render((banner.enabled, dict(banner.variables)), g.flags.enabled("premium_checkout"))

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        ready = ready_now(engine is None or engine.ready)
        return ("ok" if ready else "loading"), 200 if ready else 503

    @app.get("/stats")
    def stats() -> dict[str, int]:
        return engine.stats() if engine is not None else {}

    @app.get("/gc")
    def gc_pauses() -> dict[str, float]:
        return PAUSES.reset()

    return app


def wsgi_app() -> Any:
    """The page as a plain WSGI application, bare, with a peer, or inside
    ``HeapFlagsWSGIMiddleware`` (``environ["vwo_heap.flags"]``)."""
    engine: Any = None
    peer = PEERS[CASE]() if CASE in PEERS else None

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        status, kind = "200 OK", "text/html; charset=utf-8"
        if path == "/healthz":
            ready = ready_now(engine is None or engine.ready)
            status, kind = ("200 OK" if ready else "503 Service Unavailable"), "text/plain"
            body = "ok" if ready else "loading"
        elif path in ("/stats", "/gc"):
            kind = "application/json"
            figures = PAUSES.reset() if path == "/gc" else engine.stats() if engine else {}
            body = json.dumps(figures)
        elif CASE == "bare":
            body = render((False, {}), False)
        elif peer is not None:
            body = render(*peer(environ.get("HTTP_X_HEAP_IDENTITY")))
        else:
            flags = environ["vwo_heap.flags"]
            banner = flags["new_banner"]
            body = render(
                (banner.enabled, dict(banner.variables)), flags.enabled("premium_checkout")
            )
        data = body.encode()
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(data)))])
        return [data]

    if CASE != "middleware":
        return app
    from vwo_heap_middleware import Config, FlagEngine
    from vwo_heap_middleware.wsgi import HeapFlagsWSGIMiddleware

    engine = FlagEngine(Config.from_env())
    return HeapFlagsWSGIMiddleware(app, engine=engine)


starlette = starlette_app() if os.environ.get("BENCH_FRAMEWORK") == "starlette" else None
flask = flask_app() if os.environ.get("BENCH_FRAMEWORK") == "flask" else None
wsgi = wsgi_app() if os.environ.get("BENCH_FRAMEWORK") == "wsgi" else None
