"""The Flask extension, requires_flag and templates (Flask's test client)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g, jsonify, render_template_string

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, MEMBER, EngineFactory, wait_until
from vwo_heap_middleware import FlagEngine, get_flags, requires_flag
from vwo_heap_middleware.flask import EXTENSION, HeapFlags
from vwo_heap_middleware.testing.gateway import LocalGateway


def flask_app(engine: FlagEngine | None = None, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    HeapFlags(app, engine=engine)

    @app.get("/state")
    def state() -> Any:
        assert id(get_flags()) == id(g.flags)
        return jsonify(identity=g.flags.identity, flags=g.flags.to_dict())

    @app.get("/page")
    def page() -> str:
        return render_template_string(
            "{{ flags.variable('new_banner', 'text', 'x') }}|"
            "{% if flags.enabled('premium_checkout') %}premium{% else %}standard{% endif %}"
        )

    @app.get("/premium")
    @requires_flag("premium_checkout")
    def premium() -> str:
        return "premium"

    @app.get("/premium-async")
    @requires_flag("premium_checkout")
    async def premium_async() -> str:
        return "premium async"

    @app.get("/gone")
    @requires_flag("premium_checkout", status=410)
    def gone() -> str:
        return "premium"

    @app.get("/redirected")
    @requires_flag("premium_checkout", redirect_to="/pricing")
    def redirected() -> str:
        return "premium"

    @app.get("/handled")
    @requires_flag("premium_checkout", handler=lambda request: (f"upsell {request.path}", 402))
    def handled() -> str:
        return "premium"

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    return app


@pytest.fixture
def engine(shop_gateway: LocalGateway, make_engine: EngineFactory) -> FlagEngine:
    return make_engine(shop_gateway, flags=("premium_checkout", "new_banner"))


def test_g_flags_and_extension(engine: FlagEngine) -> None:
    app = flask_app(engine)
    assert app.extensions[EXTENSION].engine is engine
    body = app.test_client().get("/state", headers=MEMBER).get_json()
    assert body["identity"] == "vip@example.com"
    assert body["flags"]["premium_checkout"]["variables"] == {"tier_label": "<b>Gold</b>"}


def test_template_global_is_escaped(engine: FlagEngine) -> None:
    text = flask_app(engine).test_client().get("/page", headers=MEMBER).get_data(as_text=True)
    assert text == "&lt;script&gt;alert(1)&lt;/script&gt;|premium"


@pytest.mark.parametrize(
    ("path", "headers", "status", "text"),
    [
        ("/premium", MEMBER, 200, "premium"),
        ("/premium", {}, 404, None),
        ("/premium-async", MEMBER, 200, "premium async"),
        ("/premium-async", {}, 404, None),
        ("/gone", {}, 410, None),
        ("/handled", {}, 402, "upsell /handled"),
    ],
)
def test_requires_flag_on_flask(
    engine: FlagEngine, path: str, headers: dict[str, str], status: int, text: str | None
) -> None:
    response = flask_app(engine).test_client().get(path, headers=headers)
    assert response.status_code == status
    if text is not None:
        assert response.get_data(as_text=True) == text


def test_redirect_is_relative(engine: FlagEngine) -> None:
    response = flask_app(engine).test_client().get("/redirected")
    assert response.status_code == 302
    assert response.headers["Location"] == "/pricing"


def test_vary_when_flags_were_read(engine: FlagEngine) -> None:
    client = flask_app(engine).test_client()
    assert client.get("/state", headers=MEMBER).headers["Vary"] == "Cookie, X-Heap-Identity"
    assert "Vary" not in client.get("/plain").headers


def test_bad_cookies_are_anonymous(engine: FlagEngine) -> None:
    client = flask_app(engine).test_client()
    client.set_cookie("_hp5_meta.1", "%FF" + "{" * 4000)
    response = client.get("/state")
    assert response.status_code == 200
    assert response.get_json()["identity"] is None


def test_engine_from_app_config(shop_gateway: LocalGateway) -> None:
    app = flask_app(
        VWO_ACCOUNT_ID="777",
        VWO_SDK_KEY="shop-key",
        VWO_GATEWAY_URL=shop_gateway.url,
        VWO_HEAP_FLAGS=["premium_checkout"],
        VWO_HEAP_IDENTITY_HEADER="X-User",
    )
    engine = app.extensions[EXTENSION].engine
    try:
        wait_until(lambda: engine.ready, what="engine from app.config")
        body = app.test_client().get("/state", headers={"X-User": "vip@example.com"}).get_json()
        assert list(body["flags"]) == ["premium_checkout"]
        assert body["flags"]["premium_checkout"]["enabled"]
    finally:
        engine.close()


def test_missing_config_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VWO_ACCOUNT_ID", raising=False)
    with pytest.raises(ValueError, match="VWO_ACCOUNT_ID is not set"):
        flask_app()


def test_engine_from_app_config_then_the_environment(
    shop_gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VWO_ACCOUNT_ID", "777")
    monkeypatch.setenv("VWO_SDK_KEY", "shop-key")
    monkeypatch.setenv("VWO_GATEWAY_URL", shop_gateway.url)
    monkeypatch.setenv("VWO_HEAP_FLAGS", "new_banner")
    app = flask_app(VWO_HEAP_FLAGS=["premium_checkout"])
    engine = app.extensions[EXTENSION].engine
    try:
        assert engine.config.gateway_url == shop_gateway.url, "from the environment"
        assert engine.config.flags == ("premium_checkout",), "app.config wins"
    finally:
        engine.close()


def test_offline_app_config_with_the_account_but_no_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("VWO_ACCOUNT_ID", "VWO_SDK_KEY", "VWO_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    app = flask_app(
        VWO_ACCOUNT_ID="123456",
        VWO_SDK_KEY="prod-key",
        VWO_HEAP_OFFLINE_FLAGS=str(DEMO_FLAGS),
        VWO_HEAP_OFFLINE_SEGMENTS=str(DEMO_SEGMENTS),
        VWO_HEAP_FLAGS=["premium_checkout"],
    )
    engine = app.extensions[EXTENSION].engine
    try:
        body = app.test_client().get("/state", headers={"X-Heap-Identity": "ada@example.com"})
        assert body.get_json()["flags"]["premium_checkout"]["enabled"]
        assert engine.config.sdk_key == "prod-key"
    finally:
        engine.close()


def login_header(request: Any) -> str | None:
    """A resolver an app would name by its dotted path: the tests' stand-in for a login."""
    return request.headers.get("X-Test-Login")  # type: ignore[no-any-return]


def hooked_app(shop_gateway: LocalGateway, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        VWO_ACCOUNT_ID="777",
        VWO_SDK_KEY="shop-key",
        VWO_GATEWAY_URL=shop_gateway.url,
        VWO_HEAP_FLAGS="premium_checkout",
        VWO_HEAP_TRUST_CLIENT_IDENTITY="false",
        VWO_HEAP_STATE_DIR=None,  # None means unset
        VWO_HEAP_LOOKUP_TIMEOUT=10,
        VWO_HEAP_EVALUATION_TIMEOUT=10,
    )
    app.config.update(options.pop("config", {}))
    extension = HeapFlags(app, **options)
    assert extension.engine is not None
    extension.engine.wait_ready(10)

    @app.get("/state")
    def state() -> Any:
        return jsonify(identity=g.flags.identity, premium=g.flags.enabled("premium_checkout"))

    return app


@pytest.mark.parametrize(
    "options",
    [
        {"identity_resolver": login_header},
        {"identity_resolver": "tests.test_flask.login_header"},
        {"config": {"VWO_HEAP_IDENTITY_RESOLVER": "tests.test_flask.login_header"}},
        {"config": {"VWO_HEAP_IDENTITY_RESOLVER": login_header}},
    ],
    ids=["argument", "argument-path", "config-path", "config-callable"],
)
def test_the_trusted_resolver_has_a_flask_hook(
    shop_gateway: LocalGateway, options: dict[str, Any]
) -> None:
    """Issue: ``app.config["VWO_HEAP_IDENTITY_RESOLVER"] = fn`` was silently ignored."""
    app = hooked_app(shop_gateway, **options)
    try:
        client = app.test_client()
        signed_in = client.get("/state", headers={"X-Test-Login": "vip@example.com"}).get_json()
        forged = client.get("/state", headers=MEMBER).get_json()
    finally:
        app.extensions[EXTENSION].engine.close()
    assert signed_in == {"identity": "vip@example.com", "premium": True}
    assert forged == {"identity": None, "premium": False}, "the header counts for nothing"


def test_hooks_and_a_ready_engine_do_not_mix(engine: FlagEngine) -> None:
    with pytest.raises(TypeError, match="give the hooks to the engine's Config"):
        HeapFlags(Flask(__name__), engine=engine, identity_resolver=login_header)
