"""``@requires_flag`` and ``FlagRequired`` on their own, with real decisions but no framework."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support import EngineFactory
from vwo_heap_middleware import FlagEngine, FlagRequired, open_request, requires_flag
from vwo_heap_middleware.guards import NO_MIDDLEWARE, UNSAFE_REDIRECT, refusal, safe_redirect
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.visitor import RequestFacts

MEMBER = RequestFacts(identity_header="ada@example.com")
STRANGER = RequestFacts(identity_header="bob@example.com")


@pytest.fixture
def engine(demo_gateway: LocalGateway, make_engine: EngineFactory) -> FlagEngine:
    return make_engine(demo_gateway)


@requires_flag("premium_checkout", status=403)
def premium(label: str) -> str:
    return f"premium {label}"


@requires_flag("premium_checkout", redirect_to="/pricing")
async def premium_async() -> str:
    return "premium async"


def test_the_view_runs_only_for_the_flag(engine: FlagEngine) -> None:
    with open_request(engine, MEMBER, request=None):
        assert premium("x") == "premium x"
    with open_request(engine, STRANGER, request=None), pytest.raises(FlagRequired) as refused:
        premium("x")
    assert (refused.value.key, refused.value.status, refused.value.redirect_to) == (
        "premium_checkout",
        403,
        None,
    )


def test_async_views_and_redirects(engine: FlagEngine) -> None:
    async def visit(facts: RequestFacts) -> Any:
        with open_request(engine, facts, request=None):
            return await premium_async()

    assert asyncio.run(visit(MEMBER)) == "premium async"
    with pytest.raises(FlagRequired) as refused:
        asyncio.run(visit(STRANGER))
    assert refused.value.redirect_to == "/pricing"


def test_a_handler_answers_with_the_request(engine: FlagEngine) -> None:
    @requires_flag("premium_checkout", handler=lambda request: ("upsell", request))
    def page() -> Any:
        return "premium"

    with open_request(engine, STRANGER, request="the request"):
        assert page() == ("upsell", "the request")


def test_outside_a_request_it_fails_closed_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(FlagRequired):
        premium("x")
    assert NO_MIDDLEWARE % "premium_checkout" in caplog.text


@pytest.mark.parametrize("status", [200, 302, 600, True, "404"])
def test_status_must_be_an_error_status(status: Any) -> None:
    with pytest.raises(ValueError, match="status must be an HTTP error status"):
        requires_flag("x", status=status)
    with pytest.raises(ValueError, match="status must be an HTTP error status"):
        refusal(status, None)


@pytest.mark.parametrize(
    "target", ["https://evil.example", "//evil.example", "/\\evil", "pricing", "/a\r\nX: y", 7]
)
def test_redirects_stay_on_the_site(target: Any) -> None:
    with pytest.raises(ValueError, match="relative path"):
        safe_redirect(target)


def test_relative_redirects_pass() -> None:
    assert refusal(404, "/pricing?from=premium") == "/pricing?from=premium"
    assert refusal(410, None) is None


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil",
        "/a\r\nSet-Cookie: x",
        "/a\x85b",
        "/\x00",
    ],
)
def test_flag_required_checks_a_redirect_where_it_is_built(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An app raising FlagRequired(key, redirect_to=request.args["next"]) is no open redirect:
    the target is refused and the page answers with its status, said in a warning."""
    refused = FlagRequired("premium_checkout", 403, redirect_to=target)
    assert (refused.redirect_to, refused.status) == (None, 403)
    assert UNSAFE_REDIRECT % ("premium_checkout", 403) in caplog.text


def test_redirects_beyond_ascii_are_percent_encoded() -> None:
    assert safe_redirect("/café?q=ü ß") == "/caf%C3%A9?q=%C3%BC%20%C3%9F"
    assert safe_redirect("/already%20encoded") == "/already%20encoded"
    assert FlagRequired("k", redirect_to="/naïve").redirect_to == "/na%C3%AFve"
    with pytest.raises(ValueError, match="valid Unicode"):
        safe_redirect("/\ud800")
