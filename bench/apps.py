"""The benchmark page in every case, for Starlette (uvicorn) and Flask (gunicorn).

``BENCH_CASE`` picks the case: ``bare`` (no flags), ``seed`` (a hand-written middleware calling
the stock SDK's ``get_flag`` per flag per request with the seed's context, as a user following
VWO's guide would), or ``middleware`` (this library). The gateway comes from the environment.
"""

from __future__ import annotations

import os
from typing import Any

CASE = os.environ.get("BENCH_CASE", "bare")
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
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send

    engine = None

    async def page(request: Request) -> HTMLResponse:
        if CASE == "bare":
            return HTMLResponse(render((False, {}), False))
        if CASE == "seed":
            decisions = request.scope["seed_flags"]
            return HTMLResponse(render(decisions["new_banner"], decisions["premium_checkout"][0]))
        flags = request.state.flags
        banner = flags["new_banner"]
        return HTMLResponse(
            render((banner.enabled, dict(banner.variables)), flags.enabled("premium_checkout"))
        )

    async def healthz(request: Request) -> PlainTextResponse:
        ready = engine is None or engine.ready
        return PlainTextResponse("ok" if ready else "loading", status_code=200 if ready else 503)

    app: Any = Starlette(routes=[Route("/", page), Route("/healthz", healthz)])
    if CASE == "seed":
        client = seed_client()

        class SeedMiddleware:
            def __init__(self, app: ASGIApp) -> None:
                self.app = app

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http":
                    headers = dict(scope["headers"])
                    identity = headers.get(b"x-heap-identity", b"").decode() or None
                    context = seed_context(
                        identity, headers.get(b"user-agent", b"").decode(), scope["client"][0]
                    )
                    scope["seed_flags"] = seed_flags(client, context)
                await self.app(scope, receive, send)

        app = SeedMiddleware(app)
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
        banner = g.flags["new_banner"]
        return render((banner.enabled, dict(banner.variables)), g.flags.enabled("premium_checkout"))

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        ready = engine is None or engine.ready
        return ("ok" if ready else "loading"), 200 if ready else 503

    return app


starlette = starlette_app() if os.environ.get("BENCH_FRAMEWORK") == "starlette" else None
flask = flask_app() if os.environ.get("BENCH_FRAMEWORK") == "flask" else None
