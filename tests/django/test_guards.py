"""Guards on Django views of every kind, and on DRF views and ViewSet actions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import AsyncClient, Client

MEMBER = {"headers": {"X-Heap-Identity": "vip@example.com"}}
STRANGER = {"headers": {"X-Heap-Identity": "someone@example.com"}}


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/premium", 404, "the project's own 404 page"),
        ("/forbidden", 403, "the project's own 403 page"),
        ("/payment", 402, ""),
        ("/handled", 402, "upsell"),
        ("/class", 404, "the project's own 404 page"),
    ],
)
def test_a_visitor_without_the_flag_gets_the_projects_answer(
    path: str, status: int, text: str
) -> None:
    client = Client()
    assert client.get(path, **MEMBER).status_code == 200
    refused = client.get(path, **STRANGER)
    assert (refused.status_code, refused.content.decode()) == (status, text)


def test_redirects_stay_relative() -> None:
    refused = Client().get("/redirected", **STRANGER)
    assert (refused.status_code, refused["Location"]) == (302, "/pricing")


@pytest.mark.parametrize(
    ("path", "member", "stranger"),
    [("/premium-async", "premium async", 404), ("/class-async", "premium async class", 302)],
)
def test_async_views_are_guarded_too(path: str, member: str, stranger: int) -> None:
    async def visit(headers: dict[str, Any]) -> Any:
        return await AsyncClient().get(path, **headers)

    assert asyncio.run(visit(MEMBER)).content.decode() == member
    assert asyncio.run(visit(STRANGER)).status_code == stranger


def test_drf_views_read_request_flags_and_are_guarded() -> None:
    client = Client()
    allowed = client.get("/api/premium", **MEMBER)
    assert json.loads(allowed.content) == {"premium": True}, "a serializer read request.flags"
    hidden = client.get("/api/premium", **STRANGER)
    anonymous = client.get("/api/premium")
    for refused_ in (
        hidden,
        anonymous,
    ):  # issue: 403 naming the flag; "credentials..." when anonymous
        assert refused_.status_code == 404, refused_.content
        assert b"premium_checkout" not in refused_.content
        assert b"credentials" not in refused_.content
    listed = client.get("/api/offers/", **MEMBER)
    assert json.loads(listed.content) == {"tier": "<b>Gold</b>"}, "through DRF's Request"
    assert json.loads(client.get("/api/offers/7/", **MEMBER).content) == {"offer": "7"}
    refused = client.get("/api/offers/7/", **STRANGER)
    assert refused.status_code == 404 and refused["Content-Type"] == "application/json"


def test_a_drf_permission_may_refuse_with_403_without_naming_the_flag() -> None:
    from rest_framework.test import APIRequestFactory

    from vwo_heap_middleware.django import requires_flag_permission

    permission = requires_flag_permission("premium_checkout", status=403)()
    request = APIRequestFactory().get("/")
    assert permission.has_permission(request, None) is False  # no request flags: off
    assert "premium_checkout" not in str(getattr(permission, "message", ""))
