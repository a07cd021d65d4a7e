"""The visitor and the VWO user context, checked against the real SDK where it matters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from tests.sdk_probe import probe
from tests.support import DATA
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.identity import short_hash
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.visitor import (
    BAD_CUSTOM_VARIABLE,
    CALLBACK_FAILED,
    CALLBACK_FAILED_AGAIN,
    RequestFacts,
    build_visitor,
    client_ip,
    identify,
    resolve_identity,
    resolve_identity_async,
)


def config(**kwargs: Any) -> Config:
    return Config(
        account_id="999001", sdk_key="raw-sdk-key", gateway_url="http://127.0.0.1:1", **kwargs
    )


def heap_cookie(identity: str | None, user_id: str = "4835702585115963") -> str:
    document: dict[str, Any] = {"userId": user_id, "sessionId": "1"}
    if identity:
        document["identity"] = identity
    return "_hp5_meta.1=" + quote(json.dumps(document))


def test_context_has_the_python_sdk_keys() -> None:
    facts = RequestFacts(
        cookie=heap_cookie("ada@example.com"), user_agent="UA/1", peer="203.0.113.9"
    )
    visitor = build_visitor(config(), facts, request=None)
    assert visitor.context == {
        "id": "ada@example.com",
        "custom_variables": {"heap_identity": "ada@example.com"},
        "user_agent": "UA/1",
        "ip_address": "203.0.113.9",
    }


def test_anonymous_visitor_uses_heap_user_id_and_no_custom_variable() -> None:
    visitor = build_visitor(config(), RequestFacts(cookie=heap_cookie(None)), request=None)
    assert visitor.user_id == "4835702585115963"
    assert visitor.context == {"id": "4835702585115963", "custom_variables": {}}


def test_no_id_at_all_means_no_context_unless_a_fallback_gives_one() -> None:
    assert build_visitor(config(), RequestFacts(), request=None).context is None
    with_fallback = config(fallback_user_id=lambda request: f"anon-{request}")
    assert build_visitor(with_fallback, RequestFacts(), request="7").user_id == "anon-7"


def test_enricher_adds_variables_but_cannot_replace_the_identity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    enriched = config(
        context_enricher=lambda request: {"plan": "gold", "heap_identity": "mallory", "bad": [1]}
    )
    visitor = build_visitor(
        enriched, RequestFacts(cookie=heap_cookie("ada@example.com")), request=None
    )
    assert visitor.context is not None
    assert visitor.context["custom_variables"] == {
        "plan": "gold",
        "heap_identity": "ada@example.com",
    }
    assert BAD_CUSTOM_VARIABLE % ("list", "bad") in caplog.text


def test_a_coroutine_resolver_on_the_sync_path_is_awaited() -> None:
    """Issue: ``await request.auser()`` worked under ASGI and was refused under WSGI, so no
    documented resolver worked on both stacks."""

    async def resolver(request: object) -> str:
        await asyncio.sleep(0)
        return "ada@example.com"

    assert resolve_identity(config(identity_resolver=resolver), request=None) == "ada@example.com"


def test_a_plain_resolver_on_the_async_path_runs_where_the_framework_says() -> None:
    ran_in: list[str] = []

    def resolver(request: object) -> str:
        ran_in.append(threading.current_thread().name)
        return "ada@example.com"

    async def in_a_thread(call: Callable[[], object]) -> object:
        return await asyncio.to_thread(call)

    resolved = asyncio.run(
        resolve_identity_async(config(identity_resolver=resolver), None, in_a_thread)
    )
    assert resolved == "ada@example.com"
    assert ran_in and ran_in[0] != threading.main_thread().name, "not on the loop's thread"


def test_failing_hooks_do_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def boom(request: object) -> dict[str, object]:
        raise RuntimeError("app bug")

    broken = config(context_enricher=boom, fallback_user_id=boom)
    assert build_visitor(broken, RequestFacts(), request=None).context is None
    assert (
        build_visitor(broken, RequestFacts(cookie=heap_cookie("a@b.c")), request=None).context
        is not None
    )
    assert CALLBACK_FAILED % ("context_enricher", "RuntimeError") in caplog.text
    assert caplog.text.count(CALLBACK_FAILED % ("fallback_user_id", "RuntimeError")) == 1
    caplog.clear()
    with caplog.at_level("DEBUG", logger="vwo_heap_middleware"):
        build_visitor(broken, RequestFacts(), request=None)
    assert [r.levelname for r in caplog.records] == ["DEBUG"], "logged in full only once"
    assert CALLBACK_FAILED_AGAIN % ("fallback_user_id", "RuntimeError") in caplog.text


def test_custom_variable_name_is_configurable() -> None:
    visitor = build_visitor(
        config(custom_variable="heap_user"), RequestFacts(identity_header="x@y.z"), request=None
    )
    assert visitor.context is not None
    assert visitor.context["custom_variables"] == {"heap_user": "x@y.z"}


@pytest.mark.parametrize(
    ("sources", "trust", "expected"),
    [
        (("resolver", "header", "cookie"), True, "resolved@example.com"),
        (("header", "cookie"), True, "header@example.com"),
        (("cookie", "header"), True, "cookie@example.com"),
        (("resolver", "header", "cookie"), False, "resolved@example.com"),
    ],
)
def test_identity_precedence(sources: tuple[str, ...], trust: bool, expected: str) -> None:
    facts = RequestFacts(
        cookie=heap_cookie("cookie@example.com"), identity_header="header@example.com"
    )
    found = identify(
        config(identity_sources=sources, trust_client_identity=trust), facts, "resolved@example.com"
    )
    assert found.identity == expected


def test_untrusted_client_identity_names_nobody_but_still_buckets() -> None:
    """Issue: with trust off a logged-out visitor had no user id, so even ``everyone`` rollouts
    were off (``no_user``). Heap's anonymous ``userId`` buckets them; the identity in the same
    cookie (or the header) never reaches the custom variable."""
    facts = RequestFacts(
        cookie=heap_cookie("cookie@example.com"), identity_header="header@example.com"
    )
    visitor = build_visitor(config(trust_client_identity=False), facts, request=None)
    assert visitor.heap.identity is None
    assert visitor.context == {"id": "4835702585115963", "custom_variables": {}}
    no_cookie = build_visitor(
        config(trust_client_identity=False), RequestFacts(identity_header="h@x.y"), request=None
    )
    assert no_cookie.context is None


def test_resolver_without_identity_falls_through_to_the_next_source() -> None:
    facts = RequestFacts(identity_header="header@example.com")
    assert identify(config(), facts, resolved=None).identity == "header@example.com"


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded", "proxies", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", None, (), "203.0.113.9"),
        ("10.0.0.2", "198.51.100.1", None, (), "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1", None, ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.5", None, ("10.0.0.0/8",), "198.51.100.1"),
        ("203.0.113.9", "198.51.100.1", None, ("10.0.0.0/8",), "203.0.113.9"),
        (
            "10.0.0.2",
            None,
            'for=198.51.100.7;proto=https, for="[2001:db8::1]:443"',
            ("10.0.0.0/8",),
            "2001:db8::1",
        ),
        ("10.0.0.2", "garbage", None, ("10.0.0.0/8",), "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1:5555", None, ("10.0.0.0/8",), "198.51.100.1"),
        ("not-an-ip", None, None, ("10.0.0.0/8",), None),
        ("unix-socket", None, None, (), "unix-socket"),
        (None, None, None, (), None),
    ],
)
def test_client_ip(
    peer: str | None,
    xff: str | None,
    forwarded: str | None,
    proxies: tuple[str, ...],
    expected: str | None,
) -> None:
    facts = RequestFacts(peer=peer, forwarded_for=xff, forwarded=forwarded)
    assert client_ip(config(trusted_proxies=proxies), facts) == expected


def test_short_hash_is_stable_and_hides_the_identity() -> None:
    key = Config(account_id="1", sdk_key="deployment-key", gateway_url="http://x").log_key
    assert short_hash("ada@example.com", key=key) == short_hash("ada@example.com", key=key)
    assert "ada" not in short_hash("ada@example.com", key=key)
    assert len(short_hash("x", key=key)) == 12


def test_short_hash_cannot_be_matched_by_hashing_a_guess() -> None:
    """Unkeyed, anyone can confirm a known e-mail in a log line; keyed with the deployment's
    SDK key, a guess hashed without the key (or with another deployment's) does not match."""
    ours = Config(account_id="1", sdk_key="deployment-key", gateway_url="http://x").log_key
    theirs = Config(account_id="1", sdk_key="another-key", gateway_url="http://x").log_key
    logged = short_hash("ada@example.com", key=ours)
    unkeyed = hashlib.blake2b(b"ada@example.com", digest_size=6).hexdigest()
    assert logged not in (unkeyed, short_hash("ada@example.com", key=theirs))


def test_context_built_here_matches_a_custom_variable_rule_in_the_real_sdk() -> None:
    member = build_visitor(
        config(), RequestFacts(cookie=heap_cookie("Zoë@example.com"), user_agent="UA"), None
    )
    other = build_visitor(config(), RequestFacts(cookie=heap_cookie("zoë@example.com")), None)
    assert member.context is not None and other.context is not None
    with LocalGateway.from_files(settings_file=DATA / "raw_settings.json") as gateway:
        result = probe(
            gateway.url,
            "999001",
            "raw-sdk-key",
            [("identity_equals", dict(member.context)), ("identity_equals", dict(other.context))],
        )
    assert result["answers"] == [
        {"enabled": True, "variables": {"who": "Zoë"}},
        {"enabled": False, "variables": {}},
    ]
