"""The local gateway, driven over real HTTP and by the real VWO SDK (in a subprocess)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.sdk_probe import probe
from tests.support import DATA, DEMO_FLAGS, DEMO_SEGMENTS, ROOT, free_port, wait_until
from vwo_heap_middleware.testing.gateway import (
    GatewayDataError,
    LocalGateway,
    compile_flags,
    load_data,
    load_flags_file,
    load_segments_file,
    validate_settings,
)

http = urllib3.PoolManager(retries=False, timeout=5.0)


def get(url: str, **fields: str) -> urllib3.BaseHTTPResponse:
    return http.request("GET", url, fields=fields)


def test_sdk_fetches_settings_and_evaluates_rollouts_from_a_raw_settings_file(
    raw_gateway: LocalGateway,
) -> None:
    users = [f"user-{n}" for n in range(200)]
    calls: list[tuple[str, dict[str, Any]]] = [("everyone_on", {"id": "u1"})]
    calls += [("plan_badge", {"id": "u2", "custom_variables": {"plan": "gold"}})]
    calls += [("plan_badge", {"id": "u3", "custom_variables": {"plan": "silver"}})]
    calls += [("half_rollout", {"id": user}) for user in users]
    result = probe(raw_gateway.url, "999001", "raw-sdk-key", calls)

    assert result["settings_loaded"]
    everyone, gold, silver, *half = result["answers"]
    assert everyone == {"enabled": True, "variables": {"mode": "on", "ratio": 0.75}}
    assert gold == {"enabled": True, "variables": {"label": "Gold member"}}
    assert silver["enabled"] is False
    enabled = [answer for answer in half if answer["enabled"]]
    assert 60 <= len(enabled) <= 140, "a 50 % rollout should enable about half of 200 users"
    assert all(answer["variables"] == {"size": 2} for answer in enabled)
    records = raw_gateway.records()
    assert records["requests"]["settings"] >= 1
    assert records["events"].get("vwo_variationShown", 0) >= 2


def test_sdk_evaluates_compiled_flags_file() -> None:
    with LocalGateway.from_files(flags_file=DATA / "flags_all_rules.toml") as gateway:
        calls: list[tuple[str, dict[str, Any]]] = [("everyone", {"id": "a"})]
        calls += [("quarter", {"id": f"user-{n}"}) for n in range(400)]
        calls += [("ab", {"id": f"user-{n}"}) for n in range(100)]
        calls += [("ab", {"id": f"user-{n}"}) for n in range(100)]
        result = probe(gateway.url, "424242", "all-rules-key", calls)
    answers = result["answers"]
    assert answers[0] == {"enabled": True, "variables": {"text": "hello", "on": True}}
    quarter = [a for a in answers[1:401] if a["enabled"]]
    assert 50 <= len(quarter) <= 150, "a 25 % rollout should enable about 100 of 400 users"
    assert all(a["variables"] == {"n": 1} for a in quarter)
    first, second = answers[401:501], answers[501:601]
    assert first == second, "an A/B variation is stable per user"
    colors = {a["variables"]["color"] for a in first}
    assert colors == {"grey", "green"}


@pytest.mark.parametrize("path", [DEMO_FLAGS, DATA / "flags_all_rules.toml"])
def test_compiled_flags_pass_the_sdk_schema(path: Path) -> None:
    from wingify.services.settings_manager import SettingsManager

    settings = load_flags_file(path)
    assert SettingsManager.is_settings_valid(settings)


def test_heap_segment_rule_compiles_to_custom_variable_inlist() -> None:
    settings = load_flags_file(DEMO_FLAGS)
    campaign = settings["campaigns"][0]
    assert campaign["variations"][0]["segments"] == {
        "or": [{"custom_variable": {"heap_identity": "inlist(heap_premium_users)"}}]
    }


@pytest.mark.parametrize(
    ("attribute", "list_id", "member"),
    [
        ("Zoë@example.com", "vip_list", True),
        ("ZOË@example.com", "vip_list", True),
        ("zoë@example.com", "vip_list", False),
        ("comma, inside", "vip_list", True),
        ("00042", "beta_list", True),
        ("42", "beta_list", False),
        ("Zoë@example.com", "no_such_list", False),
    ],
)
def test_membership_answers(
    raw_gateway: LocalGateway, attribute: str, list_id: str, member: bool
) -> None:
    response = get(
        f"{raw_gateway.url}/check-attribute",
        attribute=attribute,
        listId=list_id,
        accountId="999001",
        sdkKey="raw-sdk-key",
    )
    assert response.status == 200
    assert response.json() is member
    lookup = raw_gateway.records()["membership_lookups"][-1]
    assert lookup == {
        "list_id": list_id,
        "attribute": attribute,
        "member": member,
        "known_list": list_id != "no_such_list",
    }


def test_events_are_recorded(demo_gateway: LocalGateway) -> None:
    body = {"d": {"event": {"name": "vwo_variationShown"}}}
    response = http.request(
        "POST", f"{demo_gateway.url}/events/t?en=vwo_variationShown&a=123456", json=body
    )
    assert response.status == 200
    custom = {"d": {"event": {"name": "custom_goal", "props": {"isCustomEvent": True}}}}
    synced = {"d": {"event": {"name": "vwo_syncVisitorProp", "props": {"isCustomEvent": True}}}}
    batch = {"ev": [custom, custom, synced]}
    http.request("POST", f"{demo_gateway.url}/server-side/batch-events-v2?a=123456", json=batch)
    records = get(f"{demo_gateway.url}/_gateway/records").json()
    assert records["events"] == {
        "vwo_variationShown": 1,
        "custom_goal": 2,
        "vwo_syncVisitorProp": 1,
    }
    assert (records["custom_events"], records["attribute_syncs"]) == (2, 1)
    assert records["event_log"][0]["body"] == body
    summary = get(f"{demo_gateway.url}/_gateway/records", summary="").json()
    assert summary == {
        "requests": {"events": 1, "batch_events": 1},
        "events": records["events"],
        "custom_events": 2,
        "attribute_syncs": 1,
    }


def test_aliases_are_kept_and_bad_calls_refused(demo_gateway: LocalGateway) -> None:
    """VWO's ``/user-alias`` endpoints, as the SDK calls them; a second link of an alias
    replaces the first (a client that sets without asking first is seen)."""
    url = f"{demo_gateway.url}/user-alias"
    query = "accountId=123456&sdkKey=local-demo-sdk-key"

    def link(user_id: object, alias_id: object) -> Any:
        body = {"userId": user_id, "aliasId": alias_id}
        return http.request("POST", f"{url}/setUserAlias?{query}", json=body)

    def aliases_of(*ids: str) -> Any:
        return get(f"{url}/getAliasUserId", userId=json.dumps(list(ids))).json()

    assert aliases_of("ada@example.com") == []
    assert json.loads(link("111", "ada@example.com").data) == {"isAliasSet": True}
    assert aliases_of("ada@example.com", "111") == [{"userId": "111", "aliasId": "ada@example.com"}]
    link("222", "ada@example.com")
    assert aliases_of("ada@example.com") == [{"userId": "222", "aliasId": "ada@example.com"}]
    for bad in [("", "x"), ("x", "x"), (1, "x"), ("x", None)]:
        assert link(*bad).status == 400
    assert http.request("GET", f"{url}/getAliasUserId?userId=ada").status == 400
    assert http.request("GET", f"{url}/getAliasUserId?userId=[1]").status == 400
    calls = get(f"{demo_gateway.url}/_gateway/records").json()["alias_calls"]
    assert [call["endpoint"] for call in calls][:3] == ["get", "set", "get"]


def test_user_details_are_deterministic(demo_gateway: LocalGateway) -> None:
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Version/17.2 Mobile Safari/604.1"
    details = get(
        f"{demo_gateway.url}/get-user-details", userAgent=ua, ipAddress="198.51.100.7"
    ).json()
    assert details["location"] == {"country": "DE", "region": "Berlin", "city": "Berlin"}
    assert details["userAgent"]["os"] == "iOS"
    assert details["userAgent"]["device_type"] == "mobile"
    assert details["userAgent"]["browser_string"] == "Safari"


def test_settings_reject_another_account(demo_gateway: LocalGateway) -> None:
    response = get(f"{demo_gateway.url}/server-side/v2-settings", i="local-demo-sdk-key", a="1")
    assert response.status == 400
    ok = get(f"{demo_gateway.url}/server-side/v2-settings", i="local-demo-sdk-key", a="123456")
    assert ok.json()["accountId"] == 123456


def test_latency_fault_is_observed(demo_gateway: LocalGateway) -> None:
    demo_gateway.faults.set("check_attribute", latency=0.3)
    started = time.monotonic()
    get(f"{demo_gateway.url}/check-attribute", attribute="x", listId="heap_premium_users")
    assert time.monotonic() - started >= 0.3
    demo_gateway.faults.clear()
    started = time.monotonic()
    get(f"{demo_gateway.url}/check-attribute", attribute="x", listId="heap_premium_users")
    assert time.monotonic() - started < 0.3


def test_clearing_one_endpoint_releases_only_its_waiting_requests(
    demo_gateway: LocalGateway,
) -> None:
    demo_gateway.faults.set("check_attribute", latency=0.5)
    demo_gateway.faults.set("user_details", latency=5.0)
    started = time.monotonic()
    releaser = threading.Timer(0.1, demo_gateway.faults.clear, args=("user_details",))
    releaser.start()
    get(f"{demo_gateway.url}/check-attribute", attribute="x", listId="heap_premium_users")
    assert time.monotonic() - started >= 0.5, (
        "clearing user_details did not cut check_attribute short"
    )
    started = time.monotonic()
    get(f"{demo_gateway.url}/get-user-details", userAgent="UA")
    assert time.monotonic() - started < 1.0
    releaser.join()


def test_status_and_malformed_faults_are_observed(demo_gateway: LocalGateway) -> None:
    demo_gateway.faults.set("settings", status=503)
    assert get(f"{demo_gateway.url}/server-side/v2-settings").status == 503
    demo_gateway.faults.set("settings", malformed=True)
    response = get(f"{demo_gateway.url}/server-side/v2-settings")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.data)
    demo_gateway.faults.clear("settings")
    assert get(f"{demo_gateway.url}/server-side/v2-settings").status == 200


def test_refused_connections_are_observed(demo_gateway: LocalGateway) -> None:
    # Fresh pools: a pooled keep-alive connection to a port an earlier test's gateway had (ports
    # are reused under load) would fail with a reset instead of a refusal.
    demo_gateway.refuse_connections()
    with pytest.raises(urllib3.exceptions.NewConnectionError):
        fresh = urllib3.PoolManager(retries=False, timeout=5.0)
        fresh.connection_from_url(demo_gateway.url).urlopen("GET", "/_gateway/health")
    demo_gateway.accept_connections()
    fresh = urllib3.PoolManager(retries=False, timeout=5.0)
    assert fresh.request("GET", f"{demo_gateway.url}/_gateway/health").status == 200


def test_connections_are_kept_alive_and_closed_when_it_stops(demo_gateway: LocalGateway) -> None:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", demo_gateway.port, maxsize=1, retries=False)
    for n in range(20):
        answer = pool.request("GET", f"/check-attribute?attribute=n{n}&listId=heap_premium_users")
        assert answer.status == 200 and answer.headers.get("Connection") != "close"
    assert pool.num_connections == 1, "one keep-alive connection for every call"
    many = [HTTPConnection("127.0.0.1", demo_gateway.port) for _ in range(40)]
    try:
        for _ in range(2):  # 40 open at once all stay alive (cheroot keeps 10 unless told)
            for connection in many:
                connection.request("GET", "/_gateway/health")
                response = connection.getresponse()
                assert response.read() == b'{"status": "ok"}'
                assert response.getheader("Connection") != "close"
    finally:
        for connection in many:
            connection.close()
    demo_gateway.refuse_connections()
    with pytest.raises(urllib3.exceptions.HTTPError):  # the open connection went down with it
        pool.request("GET", "/_gateway/health")
    demo_gateway.accept_connections()
    assert pool.request("GET", "/_gateway/health").status == 200


def test_control_endpoint_is_off_unless_enabled(
    demo_gateway: LocalGateway, demo_settings: dict[str, Any]
) -> None:
    response = http.request(
        "POST", f"{demo_gateway.url}/_gateway/faults", json={"endpoint": "settings", "status": 500}
    )
    assert response.status == 404
    assert demo_gateway.faults.get("settings") is None
    with LocalGateway(demo_settings, enable_control=True) as gateway:
        response = http.request(
            "POST", f"{gateway.url}/_gateway/faults", json={"endpoint": "settings", "status": 500}
        )
        assert response.status == 200
        assert get(f"{gateway.url}/server-side/v2-settings").status == 500
        http.request("DELETE", f"{gateway.url}/_gateway/faults")
        assert get(f"{gateway.url}/server-side/v2-settings").status == 200
        response = http.request("POST", f"{gateway.url}/_gateway/refuse?seconds=0.5")
        assert response.status == 200


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("f.toml", "flags = [", "not valid TOML"),
        ("f.toml", "account_id = 1", "add at least one [[flags]]"),
        ("f.toml", '[[flags]]\nkey = "a b"', "'key' must be a flag key"),
        ("f.toml", '[[flags]]\nkey = "x"\n[[flags]]\nkey = "x"', "flag 'x': defined twice"),
        (
            "f.toml",
            '[[flags]]\nkey = "x"\n[[flags.rules]]\ntype = "magic"',
            "flag 'x', rule 1: 'type' must be one of",
        ),
        (
            "f.toml",
            '[[flags]]\nkey = "x"\n[[flags.rules]]\ntype = "heap_segment"',
            "needs 'segment'",
        ),
        (
            "f.toml",
            '[[flags]]\nkey = "x"\n[[flags.rules]]\ntype = "percentage"\npercent = 150',
            "from 0 to 100, got 150",
        ),
        (
            "f.toml",
            '[[flags]]\nkey = "x"\nvariables = {a = 1}\n[[flags.rules]]\ntype = "everyone"\nvariables = {b = 2}',
            "variable 'b' is not declared",
        ),
        (
            "f.toml",
            '[[flags]]\nkey = "x"\nvariables = {a = 1}\n[[flags.rules]]\ntype = "everyone"\nvariables = {a = "s"}',
            "variable 'a' is a integer",
        ),
        (
            "f.toml",
            '[[flags]]\nkey = "x"\n[[flags.rules]]\ntype = "ab_test"\n[[flags.rules.variations]]\nweight = 40\n[[flags.rules.variations]]\nweight = 40',
            "add up to 80",
        ),
        ("s.json", "{", "not valid JSON"),
        ("s.json", '{"version": 1}', "not valid VWO settings"),
    ],
)
def test_bad_files_fail_with_clear_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    kwargs = {"flags_file": path} if name.endswith(".toml") else {"settings_file": path}
    with pytest.raises(GatewayDataError) as error:
        load_data(**kwargs)
    assert message in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("seg.json", '["a"]', "must be an object"),
        ("seg.json", '{"list": "a"}', "must be an array"),
        ("seg.json", '{"list": [1]}', "identities must be strings"),
        ("seg.csv", "id,who\nx,y", "header list_id,identity"),
        ("seg.csv", "list_id,identity\nx", "line 2"),
    ],
)
def test_bad_segment_files_fail_with_clear_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(GatewayDataError) as error:
        load_segments_file(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(GatewayDataError, match="cannot read it"):
        load_flags_file(tmp_path / "nope.toml")


def test_validate_settings_rejects_non_objects() -> None:
    with pytest.raises(GatewayDataError, match="must be a JSON object"):
        validate_settings([], source="x")
    assert compile_flags({"flags": [{"key": "a"}]})["features"][0]["key"] == "a"


@contextlib.contextmanager
def gateway_cli(*options: str) -> Iterator[str]:
    """The gateway's command line on a free port; yields its URL once it printed its banner."""
    port = free_port()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vwo_heap_middleware.testing.gateway",
            "--flags",
            str(DEMO_FLAGS),
            "--port",
            str(port),
            "--quiet",
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            assert f"http://127.0.0.1:{port}" in banner
            yield f"http://127.0.0.1:{port}"
            assert process.poll() is None, "the gateway exited"
        finally:
            process.terminate()


def test_cli_serves_on_the_given_port() -> None:
    with gateway_cli("--segments", str(DEMO_SEGMENTS)) as url:
        response = get(
            f"{url}/check-attribute", attribute="ada@example.com", listId="heap_premium_users"
        )
        assert response.json() is True


def test_cli_reports_bad_files(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", "account_id = 1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vwo_heap_middleware.testing.gateway",
            "--flags",
            str(bad),
            "--port",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: flags file {bad}:")


def test_cli_survives_a_refusal_window() -> None:
    with gateway_cli("--enable-control") as url:

        def up() -> bool:
            try:
                return get(f"{url}/_gateway/health").status == 200
            except urllib3.exceptions.HTTPError:
                return False

        assert http.request("POST", f"{url}/_gateway/refuse?seconds=1").status == 200
        wait_until(lambda: not up(), timeout=5, what="the refusal window")
        wait_until(up, timeout=10, what="the gateway to come back")


def test_a_gateway_nobody_stopped_does_not_keep_its_process_alive() -> None:
    script = (
        "from vwo_heap_middleware.testing.gateway import LocalGateway\n"
        "import urllib.request\n"
        f"gateway = LocalGateway.from_files(flags_file={str(DEMO_FLAGS)!r}).start()\n"
        "urllib.request.urlopen(gateway.url + '/_gateway/records').read()\n"
        "print('served')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (0, "served\n"), done.stderr


def test_init_writes_the_samples_a_pip_user_can_start_from(tmp_path: Path) -> None:
    """Issue: docs/local-gateway.md used ``examples/...`` files that a pip install lacks."""
    command = [sys.executable, "-m", "vwo_heap_middleware.testing.gateway", "--init"]
    done = subprocess.run([*command, str(tmp_path / "gw")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    flags, segments = tmp_path / "gw" / "flags.toml", tmp_path / "gw" / "segments.json"
    assert "premium_checkout" in flags.read_text() and json.loads(segments.read_text())
    with LocalGateway.from_files(flags_file=flags, segments_file=segments) as gateway:
        assert json.loads(gateway.app.settings_body)["features"], "a gateway serves them"
    again = subprocess.run([*command, str(tmp_path / "gw")], capture_output=True, text=True)
    assert again.returncode == 2 and "not overwritten" in again.stderr
