"""The browser payload: only allowed flags, JSON no markup breaks out of, the web SDK's stored
decisions, the visitor UUID VWO's SDKs derive; served by each adapter."""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask, render_template_string
from jinja2 import Environment
from starlette.testclient import TestClient

from tests.support import EngineFactory, visitor
from vwo_heap_middleware import Config, FlagEngine, RequestFlags
from vwo_heap_middleware.browser import STATIC_DIR, script_tag, vwo_stored
from vwo_heap_middleware.decision import DecisionDetails, FlagDecision, Reason
from vwo_heap_middleware.flask import HeapFlags
from vwo_heap_middleware.testing.gateway import LocalGateway

SCRIPT = re.compile(r'<script type="application/json" id="vwo-heap-flags">(.*)</script>', re.S)


def test_client_flags_are_checked_and_decided_with_every_request() -> None:
    config = Config.from_env(
        {
            "VWO_HEAP_OFFLINE_FLAGS": "vwo_heap_middleware/testing/gateway/samples/flags.toml",
            "VWO_HEAP_FLAGS": "premium_checkout",
            "VWO_HEAP_CLIENT_FLAGS": "new_banner,premium_checkout",
        }
    )
    assert config.client_flags == ("new_banner", "premium_checkout")
    assert config.flags == ("premium_checkout", "new_banner")
    with pytest.raises(ValueError, match="client_flags must be VWO feature flag keys"):
        Config(
            offline_flags="vwo_heap_middleware/testing/gateway/samples/flags.toml",
            client_flags=("bad key",),
        )


def test_the_payload_holds_only_allowed_flags_and_reads_the_visitor(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, client_flags=("premium_checkout",))
    flags = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
    payload = flags.client_payload(vwo_storage=True)
    assert flags.read, "the page now depends on the visitor: Vary, Cache-Control: private"
    assert payload == {
        "flags": {
            "premium_checkout": {
                "enabled": True,
                "variables": {"tier_label": "Premium", "discount_pct": 15},
                "variation": "Rollout-rule-1",
            }
        },
        "userId": "ada@example.com",
        "uuid": payload["uuid"],
        "revision": engine.readiness()["revision"],
        "vwo": {
            "premium_checkout_ada@example.com": {
                "featureKey": "premium_checkout",
                "featureId": 1,
                "userId": "ada@example.com",
                "rolloutId": 1,
                "rolloutKey": "premium_checkout_heap_segment1",
                "rolloutVariationId": 1,
            }
        },
    }
    from wingify.utils.uuid_util import get_uuid

    assert payload["uuid"] == get_uuid("ada@example.com", "123456"), "the SDK's own UUID"
    stranger = RequestFlags(engine, visitor(engine.config, "bob@example.com"))
    off = stranger.client_payload(vwo_storage=True)
    assert off["flags"]["premium_checkout"] == {
        "enabled": False,
        "variables": {},
        "variation": None,
    }
    assert off["vwo"] == {}, "the web SDK keeps nothing for a flag no rule gave"
    anonymous = RequestFlags(engine, visitor(engine.config, None)).client_payload(True)
    assert (anonymous["userId"], anonymous["uuid"], "vwo" in anonymous) == (None, None, False)


def test_an_ab_test_is_stored_as_an_experiment_and_an_override_not_at_all() -> None:
    details = DecisionDetails(
        "ab_test1", "ab_test", 0, 4, "ab_ab_test1", 2, "green", True, feature_id=9
    )
    decision = FlagDecision("ab", True, {"color": "green"}, Reason.TARGETED, details=details)
    assert vwo_stored(decision, "u1") == {
        "featureKey": "ab",
        "featureId": 9,
        "userId": "u1",
        "experimentId": 4,
        "experimentKey": "ab_ab_test1",
        "experimentVariationId": 2,
    }
    assert vwo_stored(FlagDecision("ab", True, reason=Reason.OVERRIDE), "u1") is None


@pytest.mark.parametrize(
    "hostile",
    ["</script><script>alert(1)</script>", "<!--<script>", "a & b > c", "\u2028\u2029", "]]>"],
)
def test_no_value_can_end_the_script_element(hostile: str) -> None:
    tag = script_tag({"flags": {"x": {"variables": {"text": hostile}}}}, 'id"><b', 'n"once')
    assert tag.startswith(
        '<script type="application/json" id="id&quot;&gt;&lt;b" nonce="n&quot;once">'
    )
    body = tag.split(">", 1)[1].rsplit("</script>", 1)[0]
    assert not set("<>&\u2028\u2029") & set(body), "only escapes inside"
    assert json.loads(body)["flags"]["x"]["variables"]["text"] == hostile, "the same data"
    assert Environment(autoescape=True).from_string("{{ t }}").render(t=tag) == tag, "as markup"


def test_templates_write_the_payload(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, client_flags=("new_banner",))
    app = Flask(__name__)
    HeapFlags(app, engine=engine)

    @app.get("/")
    def page() -> str:
        return render_template_string("{{ flags.client_script(nonce='abc') }}")

    client = app.test_client()
    response = client.get("/", headers={"X-Heap-Identity": "ada@example.com"})
    found = SCRIPT.search(response.get_data(as_text=True).replace(' nonce="abc"', ""))
    assert found and json.loads(found.group(1))["flags"]["new_banner"]["enabled"]
    assert "X-Heap-Identity" in response.headers["Vary"]
    with client.get("/vwo-heap/vwo_heap/flags.js") as module:
        assert module.status_code == 200 and b"export function readFlags" in module.data


def test_the_module_is_in_the_package_and_starlette_can_serve_it() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    assert (STATIC_DIR / "vwo_heap" / "flags.js").is_file()
    app = Starlette(routes=[Mount("/vwo-heap", StaticFiles(directory=STATIC_DIR))])
    with TestClient(app) as client:
        answer = client.get("/vwo-heap/vwo_heap/flags.js")
    assert answer.status_code == 200 and "javascript" in answer.headers["content-type"]


def test_an_engine_without_client_flags_gives_an_empty_payload() -> None:
    engine = FlagEngine.offline("vwo_heap_middleware/testing/gateway/samples/flags.toml")
    engine.start()
    try:
        payload = RequestFlags(engine, visitor(engine.config, "ada@example.com")).client_payload()
    finally:
        engine.close()
    assert payload["flags"] == {} and payload["userId"] == "ada@example.com"


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_variable_is_null_in_strict_json(number: float) -> None:
    """VWO settings may hold ``1e400`` (parsed as infinity): ``Infinity`` in the page made
    ``readFlags()`` fail and turn every client flag off."""
    tag = script_tag({"flags": {"x": {"enabled": True, "variables": {"n": number, "ok": 1.5}}}})
    body = tag.split(">", 1)[1].rsplit("</script>", 1)[0]

    def refuse(constant: str) -> object:
        raise ValueError(constant)

    flag = json.loads(body, parse_constant=refuse)["flags"]["x"]
    assert flag == {"enabled": True, "variables": {"n": None, "ok": 1.5}}


@pytest.mark.parametrize("kind", ["raw", "hashed", "none"])
def test_the_user_id_in_the_page_is_as_configured(kind: str) -> None:
    engine = FlagEngine.offline(
        "vwo_heap_middleware/testing/gateway/samples/flags.toml",
        client_flags=("new_banner",),
        client_user_id=kind,
    )
    engine.start()
    try:
        flags = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
        payload = flags.client_payload(vwo_storage=True)
        again = RequestFlags(engine, visitor(engine.config, "ada@example.com")).client_payload()
    finally:
        engine.close()
    assert flags.read
    assert payload["flags"]["new_banner"]["enabled"]
    if kind == "raw":
        assert payload["userId"] == "ada@example.com"
    elif kind == "hashed":
        assert re.fullmatch("[0-9a-f]{32}", payload["userId"]) and payload["uuid"]
        assert again["userId"] == payload["userId"], "the same id on every page"
        assert "ada@example.com" not in json.dumps(payload)
    else:
        assert payload["userId"] is None and payload["uuid"] is None
        assert "vwo" not in payload and "ada@example.com" not in json.dumps(payload)


def test_a_bad_client_user_id_setting_is_said() -> None:
    with pytest.raises(ValueError, match="client_user_id must be one of raw, hashed, none"):
        Config.from_env(
            {
                "VWO_HEAP_OFFLINE_FLAGS": "vwo_heap_middleware/testing/gateway/samples/flags.toml",
                "VWO_HEAP_CLIENT_USER_ID": "x",
            }
        )


def test_flask_a_payload_page_with_no_client_flags_varies_and_is_private(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """Issue: Flask sent no caching headers for a page holding the visitor's identity."""
    app = Flask(__name__)
    HeapFlags(app, engine=make_engine(shop_gateway))

    @app.get("/")
    def page() -> str:
        return render_template_string("{{ flags.client_script() }}")

    response = app.test_client().get("/", headers={"X-Heap-Identity": "vip@example.com"})
    assert "vip@example.com" in response.get_data(as_text=True)
    assert "X-Heap-Identity" in response.headers["Vary"]
    assert response.headers["Cache-Control"] == "private"
