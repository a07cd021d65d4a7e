"""Many workers, many hosts: two gunicorn "hosts" of 3 workers each share one Redis and one
local gateway. Asserted: gateway membership lookups about one per visitor (not one per worker),
the same decisions for a visitor on every worker, visitors keeping their variation when the A/B
split changes, and no 5xx while Redis is killed and restarted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import urllib3

from examples.demo_setup import heap_cookie
from tests.redis_topologies import RedisClusterServers
from tests.support import DATA, ROOT, RedisServer, free_port, wait_until, wait_until_serving
from vwo_heap_middleware.offline.flags_file import load_flags_file
from vwo_heap_middleware.testing.gateway import LocalGateway

FLAGS = DATA / "hosts_flags.toml"
VISITORS = [f"visitor{n}@example.net" for n in range(30)]
MEMBERS = VISITORS[:10]
http = urllib3.PoolManager(retries=False, timeout=10.0)


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=FLAGS) as gateway:
        gateway.set_segments({"gold_list": MEMBERS})
        yield gateway


def start_host(stack: ExitStack, gateway: LocalGateway, redis_url: str) -> str:
    port = free_port()
    env = {
        **os.environ,
        "CHAOS_APP": "flask",
        "VWO_ACCOUNT_ID": "555",
        "VWO_SDK_KEY": "examples-test-key",
        "VWO_GATEWAY_URL": gateway.url,
        "VWO_HEAP_FLAGS": "premium_checkout,checkout_color",
        "VWO_HEAP_SETTINGS_REFRESH": "1",
        "VWO_HEAP_REDIS_URL": redis_url,
    }
    command = [
        *(sys.executable, "-m", "gunicorn", "tests.scripts.chaos_apps:app"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "3", "--preload", "--log-level", "warning"),
    ]
    process = stack.enter_context(
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )
    stack.callback(process.wait, 15)
    stack.callback(process.terminate)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(process, url)  # every worker of the host
    return url


def flags_of(url: str, who: str) -> tuple[int, dict[str, Any]]:
    headers = {"Cookie": heap_cookie(who), "Connection": "close"}  # a new connection: any worker
    response = http.request("GET", f"{url}/api/flags", headers=headers)
    return response.status, json.loads(response.data)["flags"] if response.status == 200 else {}


def test_hosts_share_memberships_and_sticky_decisions(
    gateway: LocalGateway, redis_server: RedisServer
) -> None:
    with ExitStack() as stack:
        hosts = [start_host(stack, gateway, redis_server.url) for _ in range(2)]
        shared_and_sticky(gateway, hosts)
        redis_server.stop()  # Redis dies mid-run: the hosts go on without it
        during = [flags_of(hosts[n % 2], f"new{n}@example.net") for n in range(30)]
        redis_server.start()
        after = [flags_of(hosts[n % 2], who) for n, who in enumerate(VISITORS)]
        assert {status for status, _ in during + after} == {200}
        assert all(flags["premium_checkout"]["reason"] != "error" for _, flags in during + after)


def test_hosts_share_through_a_cluster(
    gateway: LocalGateway, redis_cluster: RedisClusterServers
) -> None:
    """The same on a 3-master Redis Cluster: a request's memberships in one slot, the rest
    spread; the hosts' readiness names the topology."""
    with ExitStack() as stack:
        hosts = [start_host(stack, gateway, redis_cluster.url) for _ in range(2)]
        shared_and_sticky(gateway, hosts)
        health = json.loads(http.request("GET", f"{hosts[0]}/healthz").data)
        assert health["redis"]["topology"] == "cluster" and health["redis"]["reachable"]


def shared_and_sticky(gateway: LocalGateway, hosts: list[str]) -> None:
    """Each visitor six times over both hosts: one answer each, about one lookup each; then
    the A/B split changes and every visitor keeps their variation."""
    seen: dict[str, set[str]] = {who: set() for who in VISITORS}
    statuses: list[int] = []
    for round_ in range(6):  # each visitor six times, over both hosts and their workers
        for who in VISITORS:
            status, flags = flags_of(hosts[round_ % 2], who)
            statuses.append(status)
            seen[who].add(json.dumps(flags, sort_keys=True))
    assert set(statuses) == {200}
    assert all(len(answers) == 1 for answers in seen.values()), "one answer per visitor"
    lookups = len(gateway.records()["membership_lookups"])
    assert lookups <= len(VISITORS) + 2, f"{lookups} lookups for {len(VISITORS)} visitors"
    first = {who: json.loads(answers.pop()) for who, answers in seen.items()}
    assert {w for w in VISITORS if first[w]["premium_checkout"]["enabled"]} == set(MEMBERS)
    assert {first[w]["checkout_color"]["variables"]["color"] for w in VISITORS} == {
        "grey",
        "green",
    }

    settings = load_flags_file(FLAGS)
    ab = next(c for c in settings["campaigns"] if c["key"] == "checkout_color_ab_test1")
    ab["variations"][0]["weight"], ab["variations"][1]["weight"] = 90, 10
    gateway.set_settings(settings)
    revision_requests = gateway.records()["requests"]["settings"]
    wait_until(
        lambda: gateway.records()["requests"]["settings"] >= revision_requests + 12,
        timeout=15,
        what="every worker to fetch the new settings",
    )
    for who in VISITORS:
        for url in hosts:
            status, flags = flags_of(url, who)
            assert status == 200
            color = flags["checkout_color"]["variables"]
            assert color == first[who]["checkout_color"]["variables"], f"{who} kept its variation"
