"""The django-debug-toolbar panel, through the toolbar's own middleware, store and view."""

from __future__ import annotations

import re
from html import unescape

from django.test import Client, override_settings

from tests.django.conftest import MIDDLEWARE
from vwo_heap_middleware.django import engine
from vwo_heap_middleware.identity import short_hash

TOOLBAR = ["debug_toolbar.middleware.DebugToolbarMiddleware", *MIDDLEWARE]
MEMBER = {"X-Heap-Identity": "vip@example.com", "X-Toolbar": "on"}


def panel_text(client: Client, page: str) -> str:
    request_id = re.search(r'data-request-id="([0-9a-f]+)"', page)
    assert request_id, "the toolbar was added to the page"
    answer = client.get(
        "/__debug__/render_panel/",
        {"request_id": request_id.group(1), "panel_id": "HeapFlagsPanel"},
        headers={"X-Toolbar": "on"},
    )
    content: str = answer.json()["content"]
    assert "<script>alert(1)</script>" not in content, "a variable's markup stays text"
    return unescape(re.sub(r"<[^>]+>", " ", content))


@override_settings(MIDDLEWARE=TOOLBAR)
def test_the_panel_lists_the_visitor_and_each_decision() -> None:
    client = Client()
    page = client.get("/html-page", headers=MEMBER).content.decode()
    assert "HeapFlagsPanel" in page, "the toolbar lists the panel"
    text = panel_text(client, page)
    assert short_hash("vip@example.com", key=engine().config.log_key) in text
    assert "vip@example.com" not in text, "never the raw identity"
    assert re.search(r"premium_checkout\s+on\s+targeted\s+Rollout-rule-1\s+heap_segment1", text)
    assert "vip: member" in text and "<script>alert(1)</script>" in text


@override_settings(MIDDLEWARE=TOOLBAR)
def test_no_toolbar_no_panel() -> None:
    page = Client().get("/html-page", headers={"X-Heap-Identity": "vip@example.com"})
    assert "djdt" not in page.content.decode() and "</body>" in page.content.decode()
