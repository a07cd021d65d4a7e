"""The Django middleware, in-process with Django's test clients (sync: WSGI; async: ASGI)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.utils.asyncio import async_unsafe

from tests.django.conftest import MIDDLEWARE, VWO_HEAP
from vwo_heap_middleware.django import HeapFlagsMiddleware, engine
from vwo_heap_middleware.django.middleware import BEFORE_AUTHENTICATION
from vwo_heap_middleware.django.settings import PROCESS_ENGINE

MEMBER = {"headers": {"X-Heap-Identity": "vip@example.com"}}
STRANGER = {"headers": {"X-Heap-Identity": "someone@example.com"}}


def test_request_flags_in_a_sync_view() -> None:
    response = Client().get("/state", **MEMBER)
    body = json.loads(response.content)
    assert body["identity"] == "vip@example.com"
    assert body["flags"]["premium_checkout"] == {
        "enabled": True,
        "variables": {"tier_label": "<b>Gold</b>"},
        "reason": "targeted",
    }
    assert response["Vary"] == "Cookie, X-Heap-Identity"
    assert response["Cache-Control"] == "private"


def test_async_views_decide_on_the_event_loop() -> None:
    async def visit() -> Any:
        return await AsyncClient().get("/async-state", **STRANGER)

    response = asyncio.run(visit())
    body = json.loads(response.content)
    assert body["identity"] == "someone@example.com"
    assert body["flags"]["premium_checkout"]["reason"] == "not_targeted"
    assert body["flags"]["new_banner"]["enabled"]


def test_one_middleware_serves_both_stacks() -> None:
    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("sync")

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("async")

    assert HeapFlagsMiddleware.sync_capable and HeapFlagsMiddleware.async_capable
    assert not asyncio.iscoroutinefunction(HeapFlagsMiddleware(sync_view))
    assert asyncio.iscoroutinefunction(HeapFlagsMiddleware(async_view)), "no sync_to_async hop"


@pytest.mark.parametrize("private", [True, False])
def test_the_site_cache_never_serves_one_visitors_page_to_another(private: bool) -> None:
    """Django's per-site cache in front: Vary (and Cache-Control: private) keep pages apart."""
    site_cache = [
        "django.middleware.cache.UpdateCacheMiddleware",
        *MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
    ]
    heap = {**VWO_HEAP, "cache_control_private": private}
    with override_settings(MIDDLEWARE=site_cache, VWO_HEAP=heap, CACHE_MIDDLEWARE_SECONDS=60):
        PROCESS_ENGINE.forget()
        try:
            client = Client()
            member = client.get("/page", **MEMBER).content.decode()
            stranger = client.get("/page", **STRANGER).content.decode()
            again = client.get("/page", **STRANGER).content.decode()
        finally:
            PROCESS_ENGINE.forget()
    assert member.startswith("premium|&lt;b&gt;Gold&lt;/b&gt;")
    assert stranger.startswith("standard|-") and again == stranger


@pytest.mark.parametrize("private", [True, False])
@pytest.mark.parametrize("path", ["/cached", "/cached-lazily"])
def test_cache_page_with_vary_on_flags(path: str, private: bool) -> None:
    """``@cache_page`` learns its key before the middleware runs: ``@vary_on_flags`` under it."""
    with override_settings(VWO_HEAP={**VWO_HEAP, "cache_control_private": private}):
        PROCESS_ENGINE.forget()
        caches["default"].clear()
        try:
            client = Client()
            member = client.get(path, **MEMBER)
            stranger = client.get(path, **STRANGER).content.decode()
            member_again = client.get(path, **MEMBER).content.decode()
        finally:
            PROCESS_ENGINE.forget()
    assert member.content.decode().startswith("premium") and member_again.startswith("premium")
    assert stranger.startswith("standard")
    assert "X-Heap-Identity" in member["Vary"]
    assert ("private" in member.get("Cache-Control", "")) is private


@pytest.fixture
def resolving() -> Iterator[None]:
    """The engine with a resolver reading Django's logged-in user, client identity ignored."""

    def resolver(request: HttpRequest) -> str | None:
        user = request.user
        return user.email if user.is_authenticated else None

    heap = {**VWO_HEAP, "identity_resolver": resolver, "trust_client_identity": False}
    with override_settings(VWO_HEAP=heap):
        PROCESS_ENGINE.forget()
        yield
        PROCESS_ENGINE.forget()


def test_identity_from_django_auth(resolving: None) -> None:
    user, _ = User.objects.get_or_create(username="vip", email="vip@example.com")
    client = Client()
    anonymous = json.loads(client.get("/state", **MEMBER).content)
    assert anonymous["identity"] is None, "the header counts for nothing now"
    client.force_login(user)
    signed_in = json.loads(client.get("/state").content)
    assert signed_in["identity"] == "vip@example.com"
    assert signed_in["flags"]["premium_checkout"]["enabled"]


def test_a_misplaced_middleware_is_said_once(
    resolving: None, caplog: pytest.LogCaptureFixture
) -> None:
    misplaced = [MIDDLEWARE[2], MIDDLEWARE[0], MIDDLEWARE[1]]
    with override_settings(MIDDLEWARE=misplaced), caplog.at_level(logging.ERROR):
        client = Client()
        for _ in range(3):
            assert client.get("/state").status_code == 200, "the page is served"
    said = [r for r in caplog.records if r.getMessage() == BEFORE_AUTHENTICATION]
    assert len(said) == 1


def test_the_engine_is_the_processs_one() -> None:
    assert engine() is engine()
    assert engine().wait_ready(5.0)
    assert engine().readiness()["ready"]


def test_a_page_that_reads_no_flag_does_not_vary() -> None:
    """The context processor hands templates the flags without reading them."""
    response = Client().get("/plain-template", **MEMBER)
    assert response.status_code == 200 and "Vary" not in response


def blocking_resolver(request: HttpRequest) -> str | None:
    """Reads the login as Django's ORM and sessions do: refused on the event loop."""
    return request.headers.get("X-Test-Login")


@pytest.mark.parametrize(
    "resolver",
    [async_unsafe("a resolver that reads the database")(blocking_resolver), None],
    ids=["plain", "coroutine"],
)
@pytest.mark.parametrize("stack", ["sync", "async"])
def test_a_resolver_of_either_kind_works_on_both_stacks(resolver: Any, stack: str) -> None:
    """Issue: a plain resolver reading ``request.user`` raised SynchronousOnlyOperation under
    ASGI (every logged-in user anonymous), and a coroutine resolver was refused under WSGI."""

    async def coroutine_resolver(request: HttpRequest) -> str | None:
        return await sync_to_async(blocking_resolver)(request)

    chosen = resolver or coroutine_resolver
    heap = {**VWO_HEAP, "identity_resolver": chosen, "trust_client_identity": False}
    login = {"headers": {"X-Test-Login": "vip@example.com"}}
    with override_settings(VWO_HEAP=heap):
        PROCESS_ENGINE.forget()
        try:
            if stack == "sync":
                response = Client().get("/state", **login)
            else:

                async def visit() -> Any:
                    return await AsyncClient().get("/async-state", **login)

                response = asyncio.run(visit())
        finally:
            PROCESS_ENGINE.forget()
    body = json.loads(response.content)
    assert body["identity"] == "vip@example.com"
    assert body["flags"]["premium_checkout"]["enabled"]


@pytest.mark.parametrize("client_flags", [(), ("new_banner",)], ids=["none-allowed", "one"])
def test_the_payload_never_reaches_another_visitor_through_a_cache(
    client_flags: tuple[str, ...],
) -> None:
    """Issue: with no client flag allowed, the payload (the raw identity as ``userId``) was
    written without Vary or Cache-Control: ``@cache_page`` served one visitor's e-mail to the
    next."""
    caches["default"].clear()
    heap = {**VWO_HEAP, "client_flags": client_flags}
    with override_settings(VWO_HEAP=heap):
        PROCESS_ENGINE.forget()
        try:
            client = Client()
            member = client.get("/cached-payload", **MEMBER)
            stranger = client.get("/cached-payload", **STRANGER)
        finally:
            PROCESS_ENGINE.forget()
    assert "vip@example.com" in member.content.decode()
    assert "vip@example.com" not in stranger.content.decode()
    assert "someone@example.com" in stranger.content.decode()
    assert "X-Heap-Identity" in member["Vary"] and "private" in member["Cache-Control"]


@pytest.mark.parametrize(
    ("own", "sent"),
    [
        ("max-age=60", "max-age=60, private"),
        ("public, max-age=60", "max-age=60, private"),
        ("no-store", "no-store"),
        ("private, max-age=5", "max-age=5, private"),
    ],
)
def test_a_views_own_cache_control_is_made_private(own: str, sent: str) -> None:
    response = Client().get("/own-cache-control", {"cc": own}, **MEMBER)
    assert response.content == b"on"
    directives = sorted(d.strip() for d in response["Cache-Control"].split(","))
    assert directives == sorted(d.strip() for d in sent.split(","))
