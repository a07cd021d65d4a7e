"""The clients of the VWO gateway against the local gateway over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, TlsFiles, free_port
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.gateway.client import (
    MEMBERSHIP_PATH,
    EventClient,
    GatewayClient,
    GatewayError,
    LookupTargets,
)
from vwo_heap_middleware.testing.gateway import LocalGateway

ClientFactory = Callable[..., GatewayClient]


@pytest.fixture
def client_for() -> Iterator[ClientFactory]:
    """Gateway clients on a URL (and config), each closed after the test."""
    made: list[GatewayClient] = []

    def make(url: str, *, parser: str | None = None, **kwargs: Any) -> GatewayClient:
        location = {"account_id": "123456", "sdk_key": "local-demo-sdk-key", "gateway_url": url}
        config = Config(**{**location, **kwargs})
        made.append(GatewayClient(config, parser=parser))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_settings_membership_and_user_details(
    demo_gateway: LocalGateway, client_for: ClientFactory
) -> None:
    client = client_for(demo_gateway.url)
    settings = client.fetch_settings()
    assert settings["accountId"] == 123456 and settings["features"]
    assert client.is_member("heap_premium_users", "ada@example.com") is True
    assert client.is_member("heap_premium_users", "ADA@example.com") is False
    assert client.user_details("Mozilla/5.0 (Windows NT 10.0) Firefox/120.0", "198.51.100.7") == {
        "location": {"country": "DE", "region": "Berlin", "city": "Berlin"},
        "userAgent": {
            "browser_string": "Firefox",
            "browser_version": "120.0",
            "os": "Windows",
            "os_version": "10.0",
            "device_type": "desktop",
            "device": "Other",
        },
    }
    client.close()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"status": 503}, "/check-attribute: HTTP 503"),
        ({"malformed": True}, "/check-attribute: the answer is not JSON"),
    ],
)
def test_a_bad_answer_is_a_gateway_error(
    demo_gateway: LocalGateway, client_for: ClientFactory, fault: dict[str, object], message: str
) -> None:
    demo_gateway.faults.set("check_attribute", **fault)  # type: ignore[arg-type]
    with pytest.raises(GatewayError, match=message):
        client_for(demo_gateway.url).is_member("heap_premium_users", "ada@example.com")


def test_one_try_within_the_timeout(demo_gateway: LocalGateway, client_for: ClientFactory) -> None:
    demo_gateway.faults.set("check_attribute", latency=3.0)
    client = client_for(demo_gateway.url, lookup_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(GatewayError, match="/check-attribute: "):
        client.is_member("heap_premium_users", "ada@example.com")
    assert time.monotonic() - started < 1.0, "no retries, no sleeps"
    assert demo_gateway.records()["requests"]["check_attribute"] == 1


def test_refused_connections(client_for: ClientFactory) -> None:
    client = client_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GatewayError, match="/server-side/v2-settings: "):
        client.fetch_settings(timeout=1.0)


def test_settings_for_another_account_are_refused(
    demo_gateway: LocalGateway, client_for: ClientFactory
) -> None:
    other = client_for(demo_gateway.url, account_id="1", sdk_key="x")
    with pytest.raises(GatewayError, match="HTTP 400"):
        other.fetch_settings()


def test_event_client_sends_json_and_reports_failures(
    demo_gateway: LocalGateway, client_for: ClientFactory
) -> None:
    events = EventClient()
    url = f"{demo_gateway.url}/events/t?en=vwo_variationShown&a=123456"
    json_headers = {"X-Test": "1", "Content-Type": "application/json"}
    sent = events.send("POST", url, headers=json_headers, body=b'{"d": {"msgId": "m1"}}')
    assert (sent.status, sent.data, sent.error) == (200, {"status": "ok"}, None)
    assert demo_gateway.records()["event_log"][-1]["body"] == {"d": {"msgId": "m1"}}
    demo_gateway.faults.set("events", status=500)
    failed = events.send("POST", url, headers=json_headers, body=b"{}")
    assert (failed.status, failed.error) == (500, "HTTP 500")
    assert demo_gateway.records()["requests"]["events"] == 2, "one try each: the spool retries"
    nowhere = events.send("POST", f"http://127.0.0.1:{free_port()}/events/t", headers={})
    assert nowhere.status is None and nowhere.error


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_lookups_keep_one_connection_alive(
    demo_gateway: LocalGateway, client_for: ClientFactory, parser: str
) -> None:
    client = client_for(demo_gateway.url, parser=parser)
    answers = [client.is_member("heap_premium_users", who) for who in ("ada@example.com", "x") * 5]
    assert answers == [True, False] * 5
    assert demo_gateway.records()["lookup_connections"] == 1, "one connection, kept alive"


def test_a_connection_the_gateway_closed_costs_a_retry_not_a_failure(
    demo_gateway: LocalGateway, client_for: ClientFactory
) -> None:
    client = client_for(demo_gateway.url)
    assert client.is_member("heap_premium_users", "ada@example.com")
    demo_gateway.refuse_connections()  # closes the idle connection
    demo_gateway.accept_connections()
    assert client.is_member("heap_premium_users", "ada@example.com"), "a new connection"


def test_https_with_the_configured_ca(client_for: ClientFactory, tls_files: TlsFiles) -> None:
    with LocalGateway.from_files(
        flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS, tls=(tls_files.cert, tls_files.key)
    ) as gateway:
        client = client_for(gateway.url, gateway_ca_file=str(tls_files.ca))
        assert client.fetch_settings()["accountId"] == 123456
        assert client.is_member("heap_premium_users", "ada@example.com")
        untrusting = client_for(gateway.url)  # the system's CAs do not know the test CA
        with pytest.raises(GatewayError, match="SSLCertVerificationError"):
            untrusting.is_member("heap_premium_users", "ada@example.com")


@pytest.mark.parametrize(
    ("list_id", "attribute"),
    [("heap_premium_users", "ret-1@example.com"), ("l@i st&", "a b+c/é@%=?"), ("x", "")],
)
def test_membership_targets_are_the_sdks_query(list_id: str, attribute: str) -> None:
    config = Config(account_id="123456", sdk_key="k ey&", gateway_url="http://x", flags=("a",))
    targets = LookupTargets(config)
    query = urlencode({"attribute": attribute, "listId": list_id}, safe="@")
    expected = f"{MEMBERSHIP_PATH}?{query}&{urlencode(targets.account)}"
    assert targets.membership(list_id, attribute) == expected
    assert targets.membership(list_id, attribute) == expected  # the list's part kept
