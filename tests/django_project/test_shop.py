"""Tests as the README shows them, with pytest-django's client and settings fixtures."""

from vwo_heap_middleware.testing import override_flags

MEMBER = {"HTTP_X_HEAP_IDENTITY": "ada@example.com"}


def test_member_and_stranger(client):
    assert b"Premium checkout" in client.get("/", **MEMBER).content
    assert b"Standard checkout" in client.get("/").content
    assert client.get("/premium").status_code == 404


def test_override_flags(client):
    with override_flags({"premium_checkout": True}):
        assert client.get("/premium").status_code == 200


def test_drf_view(client):
    assert client.get("/api/offer", **MEMBER).json() == {"tier": "Premium"}
    assert client.get("/api/offer").status_code == 404, "the flag stays hidden"


def test_flag_overrides_fixture(client, flag_overrides):
    flag_overrides.set("premium_checkout", enabled=True, variables={"tier_label": "Gold"})
    assert client.get("/api/offer").json() == {"tier": "Gold"}
