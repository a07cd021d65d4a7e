"""``{% load vwo_heap %}`` and the Jinja2 backend: the view's decisions, escaped."""

from __future__ import annotations

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.test import Client

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
