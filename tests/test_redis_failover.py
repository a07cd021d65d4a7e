"""Redis changing under load (``make chaos``): two gunicorn "hosts" of 3 workers keep serving
while a Redis Cluster moves a third of its slots (``redis-cli --cluster reshard``), and while
Sentinel's master is killed and its replica promoted. No 5xx, no error decision, every visitor
keeps one answer; once the cluster or the new master serves, the fleet shares lookups again."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.gateway.test_redis_hosts import FLAGS, MEMBERS, flags_of, start_host
from tests.redis_topologies import RedisClusterServers, RedisSentinelServers
from tests.support import wait_until
from vwo_heap_middleware.testing.gateway import LocalGateway

pytestmark = pytest.mark.chaos


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=FLAGS) as gateway:
        gateway.set_segments({"gold_list": MEMBERS})
        yield gateway


class Load:
    """Requests from 3 threads until stopped: returning visitors (``MEMBERS`` and a few
    others) over both hosts, each answer recorded per visitor."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.visitors = [*MEMBERS, *(f"steady{n}@example.net" for n in range(10))]
        self.answers: dict[str, set[str]] = {who: set() for who in self.visitors}
        self.statuses: list[int] = []
        self.errors = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(3)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def run(self, n: int) -> None:
        step = n
        while not self.stop.is_set():
            who = self.visitors[step % len(self.visitors)]
            status, flags = flags_of(self.hosts[step % 2], who)
            step += 3
            with self.lock:
                self.statuses.append(status)
                if status == 200:
                    self.errors += any(f["reason"] == "error" for f in flags.values())
                    self.answers[who].add(json.dumps(flags, sort_keys=True))

    def served(self) -> int:
        with self.lock:
            return len(self.statuses)

    def check(self) -> None:
        assert set(self.statuses) == {200}, f"{len(self.statuses)} requests: {set(self.statuses)}"
        assert self.errors == 0
        assert all(len(answers) == 1 for answers in self.answers.values()), "one answer each"


def shared_again(gateway: LocalGateway, hosts: list[str], tag: str) -> int:
    """New visitors, each four times over both hosts: the gateway lookups they cost."""
    before = len(gateway.records()["membership_lookups"])
    for round_ in range(4):
        for n in range(20):
            assert flags_of(hosts[(n + round_) % 2], f"{tag}{n}@example.net")[0] == 200
    return len(gateway.records()["membership_lookups"]) - before


def test_a_reshard_under_load_loses_nothing(
    gateway: LocalGateway, redis_cluster: RedisClusterServers
) -> None:
    with ExitStack() as stack:
        hosts = [start_host(stack, gateway, redis_cluster.url) for _ in range(2)]
        with Load(hosts) as load:
            wait_until(lambda: load.served() > 100, what="load")
            source, target = redis_cluster.ports[0], redis_cluster.ports[1]
            moved = redis_cluster.reshard(3000, source, target)
            assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
            served = load.served()
            wait_until(lambda: load.served() > served + 100, what="load after the reshard")
        load.check()
        lookups = shared_again(gateway, hosts, "after-reshard")
        assert lookups <= 22, f"{lookups} lookups for 20 new visitors after the reshard"


def test_a_sentinel_failover_under_load(
    gateway: LocalGateway, redis_sentinel: RedisSentinelServers
) -> None:
    with ExitStack() as stack:
        hosts = [start_host(stack, gateway, redis_sentinel.url) for _ in range(2)]
        redis_sentinel.knows_the_replica()
        with Load(hosts) as load:
            wait_until(lambda: load.served() > 100, what="load")
            redis_sentinel.kill(redis_sentinel.master)
            wait_until(
                lambda: redis_sentinel.master_port() == redis_sentinel.replica,
                timeout=30,
                what="the Sentinel to promote the replica",
            )
            served = load.served()
            wait_until(lambda: load.served() > served + 200, what="load after the failover")
        load.check()

        def every_worker_shares() -> bool:
            return shared_again(gateway, hosts, f"probe{id(object())}") <= 21

        wait_until(
            every_worker_shares, timeout=30, what="the fleet to share through the new master"
        )
        lookups = shared_again(gateway, hosts, "after-failover")
        assert lookups <= 21, f"{lookups} lookups for 20 new visitors after the failover"
