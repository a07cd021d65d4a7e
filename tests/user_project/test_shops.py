"""A user's own tests, written from the README's "Testing your app"."""

from __future__ import annotations

import os

from fastapi.testclient import TestClient
from shop_fastapi import app
from shop_flask import create_app

import vwo_heap_middleware
from vwo_heap_middleware import FlagEngine, RequestFacts, build_visitor
from vwo_heap_middleware.testing import FlagOverrides, override_flags

GOLD = {"premium_checkout": {"enabled": True, "variables": {"tier_label": "Gold"}}}


def test_runs_the_installed_wheel() -> None:
    assert vwo_heap_middleware.__file__.startswith(os.environ["WHEEL_TARGET"])


def test_fastapi_premium_page() -> None:
    with TestClient(app) as client:
        assert client.get("/premium").status_code == 404
        member = client.get("/premium", headers={"X-Heap-Identity": "ada@example.com"})
        assert member.status_code == 200 and "Premium checkout" in member.text
        with override_flags(GOLD):
            assert "Gold checkout" in client.get("/premium").text


def test_flask_premium_page(flag_overrides: FlagOverrides) -> None:
    client = create_app().test_client()
    assert client.get("/premium").status_code == 404
    flag_overrides.set("premium_checkout", enabled=True, variables={"tier_label": "Gold"})
    assert b"Gold checkout" in client.get("/premium").data


def test_the_offline_engine_fixture(flag_engine: FlagEngine) -> None:
    ada = build_visitor(flag_engine.config, RequestFacts(identity_header="ada@example.com"), None)
    assert flag_engine.decide(ada, ["premium_checkout"])["premium_checkout"].enabled
