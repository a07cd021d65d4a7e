"""Configuration mistakes surface in ``manage.py check``, named, not as a traceback."""

from __future__ import annotations

import json

import pytest
from django.core import checks
from django.test import Client, override_settings

from tests.django.conftest import MIDDLEWARE, VWO_HEAP
from vwo_heap_middleware.django.settings import PROCESS_ENGINE, config_from_settings


def run() -> list[checks.CheckMessage]:
    return checks.run_checks(tags=["vwo_heap"])


def test_a_good_configuration_passes() -> None:
    assert run() == []


@pytest.mark.parametrize(
    ("heap", "says"),
    [
        ({**VWO_HEAP, "gateway_url": "ftp://x"}, "gateway_url must be an http:// or https:// URL"),
        ({**VWO_HEAP, "evaluation_timeout": 0}, "evaluation_timeout must be"),
        ({**VWO_HEAP, "flag": ("x",)}, "VWO_HEAP has keys Config does not know: 'flag'"),
    ],
)
def test_a_bad_configuration_is_an_error_naming_what_to_fix(
    heap: dict[str, object], says: str
) -> None:
    with override_settings(VWO_HEAP=heap):
        (error,) = run()
    assert error.id == "vwo_heap.E001" and says in error.msg


def test_settings_named_like_the_environment_count_too() -> None:
    partial = override_settings(VWO_HEAP={"flags": ("premium_checkout",)}, VWO_ACCOUNT_ID="777")
    with partial, pytest.raises(ValueError, match="VWO_SDK_KEY is not set"):
        config_from_settings()
    named = {"VWO_ACCOUNT_ID": "777", "VWO_SDK_KEY": "k", "VWO_GATEWAY_URL": "http://gw:1"}
    with override_settings(VWO_HEAP={"flags": ("premium_checkout",)}, **named):
        config = config_from_settings()
    assert (config.account_id, config.gateway_url, config.flags) == (
        "777",
        "http://gw:1",
        ("premium_checkout",),
    )


def test_a_missing_or_misplaced_middleware() -> None:
    with override_settings(MIDDLEWARE=MIDDLEWARE[:2]):
        assert [m.id for m in run()] == ["vwo_heap.E002"]
    heap = {**VWO_HEAP, "identity_resolver": lambda request: None}
    with override_settings(MIDDLEWARE=[MIDDLEWARE[2], *MIDDLEWARE[:2]], VWO_HEAP=heap):
        assert [m.id for m in run()] == ["vwo_heap.W001"]
    with override_settings(MIDDLEWARE=[MIDDLEWARE[0], MIDDLEWARE[2]], VWO_HEAP=heap):
        assert [m.id for m in run()] == ["vwo_heap.W002"]


def test_hooks_may_be_dotted_paths() -> None:
    heap = {**VWO_HEAP, "identity_resolver": "tests.django.identity.from_login_header"}
    with override_settings(VWO_HEAP=heap):
        PROCESS_ENGINE.forget()
        try:
            response = Client().get("/state", headers={"X-Test-Login": "vip@example.com"})
        finally:
            PROCESS_ENGINE.forget()
    assert json.loads(response.content)["identity"] == "vip@example.com"


def test_every_unknown_key_and_bad_path_is_said_at_once() -> None:
    heap = {**VWO_HEAP, "flag": ("x",), "identity_resolvr": "x"}
    with override_settings(VWO_HEAP=heap):
        errors = run()
    assert [e.id for e in errors] == ["vwo_heap.E001"]
    message = errors[0].msg
    assert "'flag' (did you mean 'flags'?)" in message
    assert "'identity_resolvr' (did you mean 'identity_resolver'?)" in message
    with override_settings(VWO_HEAP={**VWO_HEAP, "identity_resolver": "tests.nowhere.f"}):
        (error,) = run()
    assert "VWO_HEAP['identity_resolver']: cannot import 'tests.nowhere.f'" in error.msg
