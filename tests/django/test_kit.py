"""The test kit with Django: ``override_flags`` around Django's test client and in a
``TestCase`` (pytest-django is run on a user's project in tests/testing/)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client, SimpleTestCase, TestCase

from vwo_heap_middleware.testing import override_flags

STRANGER = {"headers": {"X-Heap-Identity": "someone@example.com"}}


def test_override_flags_with_the_test_client() -> None:
    client = Client()
    assert client.get("/premium", **STRANGER).status_code == 404
    with override_flags({"premium_checkout": True}):
        assert client.get("/premium", **STRANGER).content == b"premium"


class PremiumPageTests(SimpleTestCase):
    @override_flags({"premium_checkout": {"enabled": True, "variables": {"tier_label": "Gold"}}})
    def test_premium_page(self) -> None:
        self.assertContains(self.client.get("/page", **STRANGER), "premium|Gold")

    def test_without_the_override(self) -> None:
        self.assertContains(self.client.get("/page", **STRANGER), "standard|-")


class DatabaseTests(TestCase):
    """Django's ``TestCase`` (a transaction per test) with a logged-in user."""

    def test_override_flags_as_a_context_manager(self) -> None:
        self.client.force_login(User.objects.create(username="ada"))
        with override_flags({"premium_checkout": {"enabled": True}}):
            self.assertContains(self.client.get("/premium", **STRANGER), "premium")
        self.assertEqual(self.client.get("/premium", **STRANGER).status_code, 404)
