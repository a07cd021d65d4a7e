from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, ROOT, heap_identity_for_tests
from vwo_heap_middleware.config import ENVIRONMENT, UNKNOWN_VARIABLE, Config, FlagDefault

BASE = {
    "VWO_ACCOUNT_ID": "123456",
    "VWO_SDK_KEY": "key",
    "VWO_GATEWAY_URL": "http://127.0.0.1:8787",
}


def test_from_env_reads_every_variable(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    environ = {
        **BASE,
        "VWO_HEAP_GATEWAY_CA_FILE": str(ca_file),
        "VWO_HEAP_CUSTOM_VARIABLE": "heap_user",
        "VWO_HEAP_FLAGS": "premium_checkout, new_banner,,premium_checkout",
        "VWO_HEAP_CLIENT_FLAGS": "new_banner,checkout_color",
        "VWO_HEAP_CLIENT_USER_ID": "hashed",
        "VWO_HEAP_IDENTITY_RESOLVER": "tests.support:heap_identity_for_tests",
        "VWO_HEAP_FALLBACK_USER_ID": "os.path.basename",
        "VWO_HEAP_CONTEXT_ENRICHER": "os.path.dirname",
        "HEAP_APP_ID": "1234",
        "VWO_HEAP_IDENTITY_HEADER": "X-HEAP-USER-ID",
        "VWO_HEAP_IDENTITY_SOURCES": "resolver,cookie",
        "VWO_HEAP_TRUST_CLIENT_IDENTITY": "false",
        "VWO_HEAP_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        "VWO_HEAP_ALIASING": "no",  # offline files hold no aliases: see the test below
        "VWO_HEAP_ALIAS_CLIENT_IDENTITIES": "yes",
        "VWO_HEAP_EVALUATION_TIMEOUT": "0.5",
        "VWO_HEAP_EVALUATION": "shadow",
        "VWO_HEAP_LOOKUP_TIMEOUT": "0.05",
        "VWO_HEAP_MEMBERSHIP_TTL": "120",
        "VWO_HEAP_NON_MEMBERSHIP_TTL": "30",
        "VWO_HEAP_USER_DETAILS_TTL": "45",
        "VWO_HEAP_STALE_MEMBERSHIP_TTL": "600",
        "VWO_HEAP_DECISION_TTL": "10",
        "VWO_HEAP_CACHE_SIZE": "5000",
        "VWO_HEAP_SETTINGS_REFRESH": "15",
        "VWO_HEAP_SERVER_TIMING": "on",
        "VWO_HEAP_DEBUG_HEADER": "1",
        "VWO_HEAP_SDK_LOG_LEVEL": "DEBUG",
        "VWO_HEAP_OTEL": "true",
        "VWO_HEAP_OTEL_CONTEXT_ID": "yes",
        "VWO_HEAP_OFFLINE_FLAGS": str(DEMO_FLAGS),
        "VWO_HEAP_OFFLINE_SEGMENTS": str(DEMO_SEGMENTS),
        "VWO_HEAP_EVENT_SPOOL_SIZE": "2000",
        "VWO_HEAP_FLUSH_TIMEOUT": "3",
        "VWO_HEAP_STARTUP_WAIT": "1.5",
        "VWO_HEAP_RESOLVER_READS": "Authorization, Cookie",
        "VWO_HEAP_CACHE_CONTROL_PRIVATE": "false",
        "VWO_HEAP_REDIS_URL": "redis://127.0.0.1:6379/2",
        "VWO_HEAP_REDIS_TIMEOUT": "0.1",
        "VWO_HEAP_REDIS_CA_FILE": str(ca_file),
        "VWO_HEAP_REDIS_CERT_FILE": str(ca_file),  # any readable file: loaded by redis-py
        "VWO_HEAP_REDIS_KEY_FILE": str(ca_file),
        "VWO_HEAP_REDIS_PREFIX": "shop",
        "VWO_HEAP_STICKY_TTL": "86400",
        "VWO_HEAP_STATE_DIR": str(tmp_path / "state"),
        "VWO_HEAP_SPOOL_MAX_BYTES": "1048576",
        "VWO_HEAP_BOOTSTRAP_SETTINGS": str(ca_file),  # any readable file: read at a cold start
        "VWO_HEAP_KEPT_SETTINGS_MAX_AGE": "3600",
    }
    assert set(environ) == set(ENVIRONMENT), "every documented variable is exercised"
    config = Config.from_env(environ)
    assert config.account_id == "123456"
    assert config.client_user_id == "hashed"
    assert config.identity_resolver is heap_identity_for_tests
    assert (config.fallback_user_id, config.context_enricher) == (os.path.basename, os.path.dirname)
    assert config.gateway_url == "http://127.0.0.1:8787"
    assert config.gateway_ca_file == str(ca_file)
    assert config.custom_variable == "heap_user"
    assert config.flags == ("premium_checkout", "new_banner", "checkout_color")
    assert config.client_flags == ("new_banner", "checkout_color")
    assert config.heap_app_id == "1234"
    assert config.identity_header == "X-HEAP-USER-ID"
    assert config.identity_sources == ("resolver", "cookie")
    assert config.trust_client_identity is False
    assert [str(n) for n in config.proxy_networks] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert (config.aliasing, config.alias_client_identities) == (False, True)
    assert (config.evaluation_timeout, config.lookup_timeout) == (0.5, 0.05)
    assert config.evaluation == "shadow"
    assert (config.membership_ttl, config.non_membership_ttl, config.stale_membership_ttl) == (
        120,
        30,
        600,
    )
    assert config.user_details_ttl == 45
    assert (config.decision_ttl, config.cache_size, config.settings_refresh_interval) == (
        10,
        5000,
        15,
    )
    assert config.server_timing and config.debug_header
    assert config.sdk_log_level == "DEBUG"
    assert (config.offline_flags, config.offline_segments) == (str(DEMO_FLAGS), str(DEMO_SEGMENTS))
    assert config.otel and config.otel_context_id
    assert (config.event_spool_size, config.flush_timeout) == (2000, 3)
    assert config.startup_wait == 1.5 and not config.cache_control_private
    assert config.resolver_reads == ("Authorization", "Cookie")
    assert (config.redis_url, config.redis_timeout) == ("redis://127.0.0.1:6379/2", 0.1)
    assert config.redis_ca_file == config.redis_cert_file == config.redis_key_file == str(ca_file)
    assert (config.redis_prefix, config.sticky_ttl) == ("shop", 86400)
    assert (config.state_dir, config.spool_max_bytes) == (str(tmp_path / "state"), 1048576)
    assert (config.bootstrap_settings, config.kept_settings_max_age) == (str(ca_file), 3600)


def test_aliasing_needs_the_gateway() -> None:
    assert Config.from_env({**BASE, "VWO_HEAP_ALIASING": "true"}).aliasing is True
    with pytest.raises(ValueError, match="aliasing needs the VWO gateway.*VWO_HEAP_ALIASING"):
        Config.from_env({"VWO_HEAP_ALIASING": "1", "VWO_HEAP_OFFLINE_FLAGS": str(DEMO_FLAGS)})


def test_defaults() -> None:
    config = Config.from_env(BASE)
    assert config.custom_variable == "heap_identity"
    assert config.identity_header == "X-Heap-Identity"
    assert config.identity_sources == ("resolver", "header", "cookie")
    assert config.evaluation_timeout == 0.2
    assert config.lookup_timeout == 0.1
    assert config.flags == ()
    assert config.default_for("anything") == FlagDefault()


def test_every_variable_is_documented_in_the_configuration_table() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `") for line in page.splitlines() if line.startswith("| `")}
    assert rows == set(ENVIRONMENT), "the table lists exactly the variables Config.from_env reads"


def test_keyword_overrides_win() -> None:
    assert Config.from_env(BASE, custom_variable="other").custom_variable == "other"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"VWO_SDK_KEY": "k", "VWO_GATEWAY_URL": "http://x"}, "VWO_ACCOUNT_ID is not set"),
        (
            {**BASE, "VWO_ACCOUNT_ID": "abc"},
            "VWO_ACCOUNT_ID: account_id must be your VWO account id",
        ),
        ({**BASE, "VWO_GATEWAY_URL": "ftp://x"}, "VWO_GATEWAY_URL: gateway_url must be an http"),
        ({**BASE, "VWO_GATEWAY_URL": "http://x/prefix"}, "the VWO SDK ignores a path"),
        (
            {**BASE, "VWO_HEAP_EVALUATION_TIMEOUT": "soon"},
            "VWO_HEAP_EVALUATION_TIMEOUT: must be a number of seconds",
        ),
        (
            {**BASE, "VWO_HEAP_EVALUATION_TIMEOUT": "0"},
            "VWO_HEAP_EVALUATION_TIMEOUT: evaluation_timeout must be",
        ),
        (
            {**BASE, "VWO_HEAP_TRUSTED_PROXIES": "10.0.0.0/33"},
            "VWO_HEAP_TRUSTED_PROXIES: trusted_proxies must hold",
        ),
        ({**BASE, "VWO_HEAP_TRUST_CLIENT_IDENTITY": "maybe"}, "must be true or false"),
        ({**BASE, "VWO_HEAP_IDENTITY_SOURCES": "cookie,magic"}, "identity_sources must list"),
        ({**BASE, "VWO_HEAP_CUSTOM_VARIABLE": "has space"}, "custom_variable must be"),
        ({**BASE, "VWO_HEAP_FLAGS": "ok,not ok"}, "flags must be VWO feature flag keys"),
        ({**BASE, "HEAP_APP_ID": "app"}, "heap_app_id must be your Heap app id"),
        ({**BASE, "VWO_HEAP_IDENTITY_HEADER": "X Heap"}, "identity_header must be"),
        ({**BASE, "VWO_HEAP_CACHE_SIZE": "0"}, "cache_size must be"),
        ({**BASE, "VWO_HEAP_EVALUATION": "fast"}, "evaluation must be one of native, sdk, shadow"),
        (
            {**BASE, "VWO_HEAP_GATEWAY_CA_FILE": str(DEMO_FLAGS)},
            "VWO_HEAP_GATEWAY_CA_FILE: gateway_ca_file must be a readable PEM file",
        ),
        (
            {**BASE, "VWO_HEAP_STATE_DIR": str(DEMO_FLAGS)},
            "VWO_HEAP_STATE_DIR: state_dir must be a directory the process may write",
        ),
        (
            {**BASE, "VWO_HEAP_BOOTSTRAP_SETTINGS": "/no/such/settings.json"},
            "VWO_HEAP_BOOTSTRAP_SETTINGS: bootstrap_settings must be a readable settings JSON",
        ),
        ({**BASE, "VWO_HEAP_SPOOL_MAX_BYTES": "0"}, "spool_max_bytes must be a whole number"),
        ({**BASE, "VWO_HEAP_KEPT_SETTINGS_MAX_AGE": "-1"}, "kept_settings_max_age must be"),
    ],
)
def test_bad_settings_name_what_to_fix(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as error:
        Config.from_env(environ)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"identity_resolver": "not callable"}, TypeError),
        ({"flag_defaults": {"x": {"enabled": True}}}, TypeError),
        ({"sdk_key": " "}, ValueError),
    ],
)
def test_constructor_errors(kwargs: dict[str, Any], error: type[Exception]) -> None:
    params: dict[str, Any] = {"account_id": 1, "sdk_key": "k", "gateway_url": "http://x", **kwargs}
    with pytest.raises(error):
        Config(**params)


def test_config_is_immutable_and_normalised() -> None:
    lenient: dict[str, Any] = {"account_id": 123, "flags": "one"}
    config = Config(
        sdk_key="k",
        gateway_url="https://gw.example.com:8443/",
        flag_defaults={"one": FlagDefault(True, {"a": 1})},
        **lenient,
    )
    assert config.account_id == "123"
    assert config.gateway_url == "https://gw.example.com:8443"
    assert config.flags == ("one",)
    with pytest.raises(AttributeError):
        config.sdk_key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.flag_defaults["two"] = FlagDefault()  # type: ignore[index]


def test_an_unknown_setting_is_said_once_with_a_did_you_mean(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {**BASE, "VWO_HEAP_FLAG": "premium_checkout", "VWO_HEAP_NOTHING_LIKE_IT": "1"}
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        Config.from_env(environ)
        Config.from_env(environ)
    said = [r.getMessage() for r in caplog.records]
    assert said.count(UNKNOWN_VARIABLE % ("VWO_HEAP_FLAG", " (did you mean VWO_HEAP_FLAGS?)")) == 1
    assert UNKNOWN_VARIABLE % ("VWO_HEAP_NOTHING_LIKE_IT", "") in said


def test_hooks_by_dotted_path_and_their_mistakes() -> None:
    config = Config.from_env({**BASE, "VWO_HEAP_IDENTITY_RESOLVER": "os.path:basename"})
    assert config.identity_resolver is os.path.basename
    with pytest.raises(ValueError, match="VWO_HEAP_FALLBACK_USER_ID: cannot import 'no.such.f'"):
        Config.from_env({**BASE, "VWO_HEAP_FALLBACK_USER_ID": "no.such.f"})
