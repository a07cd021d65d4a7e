"""The Flask-DebugToolbar panel, rendered by the toolbar itself in a real request."""

from __future__ import annotations

import re
from html import unescape

from flask import Flask, g
from flask_debugtoolbar import DebugToolbarExtension

from tests.support import MEMBER, EngineFactory
from vwo_heap_middleware import FlagEngine
from vwo_heap_middleware.flask import HeapFlags
from vwo_heap_middleware.identity import short_hash
from vwo_heap_middleware.testing.gateway import LocalGateway

PANEL = "vwo_heap_middleware.panels.flask.HeapFlagsPanel"


def toolbar_app(engine: FlagEngine, enabled: bool = True) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="tests",
        DEBUG_TB_ENABLED=enabled,
        DEBUG_TB_PANELS=(PANEL,),
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
    )
    HeapFlags(app, engine=engine)
    DebugToolbarExtension(app)

    @app.get("/")
    def page() -> str:
        tier = g.flags.variable("premium_checkout", "tier_label", "none")
        return f"<!doctype html><html><body><p>{tier}</p></body></html>"

    return app


def panel_html(page: str) -> str:
    found = re.search(r'id="flDebugHeapFlagsPanel-content".*?</div>\s*</div>', page, re.S)
    assert found, "the toolbar rendered the panel"
    return found.group(0)


def test_the_panel_lists_the_visitor_and_each_decision(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(shop_gateway, flags=("premium_checkout", "new_banner"))
    client = toolbar_app(engine).test_client()
    page = client.get("/", headers=MEMBER).get_data(as_text=True)
    panel = panel_html(page)
    text = unescape(re.sub(r"<[^>]+>", " ", panel))
    assert short_hash("vip@example.com", key=engine.config.log_key) in text
    assert "vip@example.com" not in page, "never the raw identity"
    assert re.search(r"premium_checkout\s+on\s+targeted\s+Rollout-rule-1\s+heap_segment1", text)
    assert "vip: member" in text and "decided now, native" in text
    assert "<script>alert(1)</script>" not in page, "a variable's markup stays text"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in panel
    again = panel_html(client.get("/", headers=MEMBER).get_data(as_text=True))
    assert "cache, native" in again


def test_the_panel_is_off_when_the_toolbar_is(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(shop_gateway, flags=("premium_checkout",))
    page = toolbar_app(engine, enabled=False).test_client().get("/", headers=MEMBER)
    assert "flDebugHeapFlagsPanel" not in page.get_data(as_text=True)
