"""``{% load vwo_heap %}`` and the Jinja2 backend: the view's decisions, escaped."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.test import Client

from tests.support import visitor
from vwo_heap_middleware import RequestFlags
from vwo_heap_middleware.django import engine

MEMBER = {"headers": {"X-Heap-Identity": "vip@example.com"}}
STRANGER = {"headers": {"X-Heap-Identity": "someone@example.com"}}


def test_the_block_and_variable_tags() -> None:
    client = Client()
    member = client.get("/page", **MEMBER).content.decode()
    assert member.strip() == (
        "premium|&lt;b&gt;Gold&lt;/b&gt;|&lt;script&gt;alert(1)&lt;/script&gt;|DEFAULT|on"
    ), "flags.premium_checkout is the decision: Django's lookup tries flags[key] first"
    stranger = client.get("/page", **STRANGER).content.decode()
    assert stranger.startswith("standard|-|&lt;script&gt;") and stranger.strip().endswith("|off")


def test_the_jinja2_backend_has_the_same_flags() -> None:
    member = Client().get("/jinja", **MEMBER).content.decode()
    assert member.strip() == "premium|&lt;b&gt;Gold&lt;/b&gt;|&lt;script&gt;alert(1)&lt;/script&gt;"


def test_outside_a_request_everything_is_off() -> None:
    rendered = Template(
        '{% load vwo_heap %}{% flag "premium_checkout" %}on{% else %}off{% endflag %}'
        '{% flag_variable "premium_checkout" "tier_label" "-" %}'
    ).render(Context({}))
    assert rendered == "off-"


def test_a_flag_tag_needs_one_key() -> None:
    with pytest.raises(TemplateSyntaxError, match="takes one argument"):
        Template("{% load vwo_heap %}{% flag %}x{% endflag %}")


def test_client_flags_writes_the_allowed_flags_for_the_browser() -> None:
    page = Template('{% load vwo_heap %}{% client_flags nonce="n1" vwo_storage=True %}').render(
        Context({"request": _request_with_flags()})
    )
    head, _, rest = page.partition(">")
    assert head == '<script type="application/json" id="vwo-heap-flags" nonce="n1"'
    payload = json.loads(rest.removesuffix("</script>"))
    assert list(payload["flags"]) == ["new_banner"], "the allow-list only"
    assert payload["flags"]["new_banner"]["variables"]["text"] == "<script>alert(1)</script>"
    assert "<script>alert" not in rest, "escaped inside the element"
    assert Template("{% load vwo_heap %}{% client_flags %}").render(Context({})) == ""


def test_the_browser_module_is_a_static_file_of_the_app() -> None:
    from django.contrib.staticfiles import finders

    found = finders.find("vwo_heap/flags.js")
    assert found and Path(str(found)).read_text(encoding="utf-8").count("export function") == 2


def _request_with_flags() -> SimpleNamespace:
    """A request as the middleware leaves it, for a template rendered outside a view."""
    the_engine = engine()
    assert the_engine.wait_ready(5.0)
    return SimpleNamespace(flags=RequestFlags(the_engine, visitor(the_engine.config, "vip@x.io")))
