"""RequestFlags: the per-request view of decisions (framework-free)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support import DATA, EngineFactory, visitor
from vwo_heap_middleware import Reason, RequestFlags
from vwo_heap_middleware.headers import ResponseHeaders
from vwo_heap_middleware.testing.gateway import LocalGateway

RULE = "rule=heap_segment1;variation=Rollout-rule-1;segment=heap_premium_users:member"


def test_reading_loading_and_overriding(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, server_timing=True)
    flags = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
    assert not flags.read
    flags.load(["new_banner"])
    assert not flags.read, "loading is not reading"
    assert "new_banner" in flags and flags.read, "asking is reading"
    assert flags.variable("premium_checkout", "discount_pct", 0) == 15, "decided on first access"
    assert flags.read and len(flags) == 2
    assert flags.identity == "ada@example.com" and flags.user_id == "ada@example.com"
    assert {d.key for d in flags} == {"new_banner", "premium_checkout"}
    flags.override("premium_checkout", False)
    assert flags["premium_checkout"].reason is Reason.OVERRIDE
    assert flags.variable("premium_checkout", "discount_pct", 0) == 0, "off: the default"
    assert flags.to_dict()["premium_checkout"] == {
        "enabled": False,
        "variables": {},
        "reason": "override",
    }
    assert repr(flags) == "<RequestFlags new_banner=on, premium_checkout=off>"
    assert flags.get(42).reason is Reason.UNKNOWN_FLAG
    headers = flags.response_headers()
    assert headers.vary == ("Cookie", "X-Heap-Identity")
    assert [name for name, _ in headers.extra] == ["Server-Timing"]


def test_load_async_decides_missing_keys_once(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    flags = RequestFlags(engine, visitor(engine.config, "grace@example.com"))
    asyncio.run(flags.load_async(["premium_checkout", "premium_checkout", "new_banner"]))
    asyncio.run(flags.load_async(["premium_checkout"]))
    assert flags.enabled("premium_checkout")
    assert len(demo_gateway.records()["membership_lookups"]) == 1


def test_untrusted_header_identity_is_not_in_vary(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, trust_client_identity=False)
    flags = RequestFlags(engine, visitor(engine.config))
    flags.enabled("new_banner")
    assert flags.response_headers() == ResponseHeaders(("Cookie",), (), "private"), (
        "Heap's anonymous cookie still buckets the visitor; the header counts for nothing"
    )


def test_vary_names_what_the_resolver_reads(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(
        demo_gateway,
        identity_resolver=lambda request: None,
        resolver_reads=("Authorization",),
        trust_client_identity=False,
    )
    flags = RequestFlags(engine, visitor(engine.config))
    assert flags.identity is None, "reading the identity is reading the visitor"
    assert flags.response_headers().vary == ("Cookie", "Authorization"), "Heap's user id too"


def test_any_read_of_the_visitor_marks_the_response(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    for read in (
        lambda f: f.identity,
        lambda f: f.user_id,
        lambda f: "x" in f,
        lambda f: len(f),
        lambda f: f.to_dict(),
        lambda f: f.enabled("new_banner"),
    ):
        flags = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
        assert not flags.response_headers(), "nothing read yet"
        read(flags)
        assert flags.response_headers() == ResponseHeaders(
            ("Cookie", "X-Heap-Identity"), (), "private"
        )


@pytest.mark.parametrize(
    "key",
    ["premium_checkout=on;targeted, x", "ключ", "bad\r\nSet-Cookie: a=b", "bad\nkey", "\x00"],
)
def test_x_flags_lists_only_flags_the_settings_know(
    key: str, demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """A key the client chose (``flags.enabled(path_param)``) never reaches the header."""
    engine = make_engine(demo_gateway, debug_header=True)
    flags = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
    flags.enabled("premium_checkout")
    assert not flags.enabled(key)
    ((name, value),) = flags.response_headers().extra
    assert (name, value) == ("X-Flags", f"premium_checkout=on;targeted;native;{RULE}")
    value.encode("latin-1")  # a header value any server can send


def test_the_debug_header_counts_as_reading_the_visitor(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """A response that read no flag (a router 404) still lists the visitor's flags in
    X-Flags: it must not be cached for another visitor."""
    engine = make_engine(demo_gateway, debug_header=True)
    flags = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
    flags.load(["premium_checkout"])
    headers = flags.response_headers()
    assert headers.vary == ("Cookie", "X-Heap-Identity") and headers.cache_control == "private"
    nothing = RequestFlags(engine, visitor(engine.config, "ada@example.com"))
    assert nothing.response_headers() == ResponseHeaders(), "nothing decided, nothing listed"


def test_vary_names_user_agent_when_a_flags_rules_read_it(
    make_engine: EngineFactory, raw_settings_with_ua: dict[str, Any]
) -> None:
    with LocalGateway(raw_settings_with_ua) as gateway:
        engine = make_engine(gateway)
        flags = RequestFlags(
            engine, visitor(engine.config, "ada@example.com", user_agent="Firefox/1")
        )
        flags.enabled("everyone_on")
        assert flags.response_headers().vary == ("Cookie", "X-Heap-Identity")
        flags.enabled("plan_badge")  # its rule reads the user agent
        assert flags.response_headers().vary == ("Cookie", "X-Heap-Identity", "User-Agent")
        engine.close()


@pytest.fixture
def raw_settings_with_ua() -> dict[str, Any]:
    settings = json.loads((DATA / "raw_settings.json").read_text(encoding="utf-8"))
    campaign = next(c for c in settings["campaigns"] if c["key"].startswith("plan_badge"))
    campaign["variations"][0]["segments"] = {"and": [{"ua": "wildcard(*Firefox*)"}]}
    return settings  # type: ignore[no-any-return]
