"""Redis as fleets run it: a cluster (keys of one request in one slot, no CROSSSLOT on any path),
TLS with a test CA and an ACL user (a wrong password or an unknown CA: one clear line, an engine
that works without Redis), and readiness saying which topology runs. Sentinel's failover and a
reshard under load are in ``tests/test_redis_failover.py`` (``make chaos``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.redis_topologies import RedisClusterServers, RedisSentinelServers, RedisTlsServer
from tests.support import DATA, visitor
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.gateway.redis_store import REDIS_FAILING, RedisStore
from vwo_heap_middleware.gateway.redis_topology import RedisTopology
from vwo_heap_middleware.testing.gateway import LocalGateway

from .test_redis_store import engine_for


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DATA / "flags_all_rules.toml") as gateway:
        gateway.set_segments({"vip_list": ["ada@example.com"]})
        yield gateway


def config(url: str, **kwargs: Any) -> Config:
    return Config(
        account_id="424242",
        sdk_key="all-rules-key",
        gateway_url="http://127.0.0.1:9",
        redis_url=url,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("url", "kind", "described"),
    [
        ("redis://:pw@127.0.0.1:6379/2", "single", "redis://:***@127.0.0.1:6379/2"),
        (
            "redis+cluster://shop:pw@10.0.0.1:7000,10.0.0.2:7000",
            "cluster",
            "cluster 10.0.0.1:7000,10.0.0.2:7000",
        ),
        (
            "rediss+sentinel://s1:26379,[::1]:26379/main/3",
            "sentinel",
            "sentinel s1:26379,::1:26379 master main",
        ),
    ],
)
def test_a_url_names_its_topology(url: str, kind: str, described: str) -> None:
    topology = RedisTopology.of(config(url))
    assert (topology.kind, topology.describe()) == (kind, described)
    assert "pw" not in topology.describe()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://10.0.0.1:7000/0", "a cluster has no database"),
        ("redis+cluster://10.0.0.1", "each node must be host:port"),
        ("redis+sentinel://s1:26379", "name the master Sentinel watches"),
        ("redis+sentinel://s1:26379/main/x", "the database must be a number"),
        ("redis+sentinel://:hunter2@s1:26379/main/x", "the database must be a number"),
    ],
)
def test_a_bad_url_says_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as raised:
        RedisStore(config(url))
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match="redis_url must start with one of"):
        config("http://redis:6379")


def test_a_cluster_keeps_a_requests_keys_in_one_slot(redis_cluster: RedisClusterServers) -> None:
    one, other = RedisStore(config(redis_cluster.url)), RedisStore(config(redis_cluster.url))
    lists = [f"list{n}" for n in range(12)]
    for list_id in lists:
        one.fetch_once("m", (list_id, "ada@example.com"), lambda: True, lambda _: 60)
    names = [one._name("m", (list_id, "ada@example.com")) for list_id in lists]
    assert len({key_slot(name.encode()) for name in names}) == 1, "one visitor, one slot"
    # Memberships of several values (an enricher's variables) span slots: read slot by slot.
    keys = [(list_id, who) for list_id in lists[:3] for who in ("ada@example.com", "bob", "cy")]
    found = other.answers("m", keys)
    assert set(found) == {(list_id, "ada@example.com") for list_id in lists[:3]}
    assert other.readiness() == {
        "topology": "cluster",
        "at": redis_cluster.url.removeprefix("redis+cluster://")
        .replace(",", ",")
        .join(["cluster ", ""]),
        "reachable": True,
        "error": None,
    }


def test_two_workers_on_a_cluster_ask_once_and_send_one_impression(
    gateway: LocalGateway, redis_cluster: RedisClusterServers
) -> None:
    url = redis_cluster.url
    first, second = (
        engine_for(gateway, None, redis_url=url),
        engine_for(gateway, None, redis_url=url),
    )
    try:
        for n in range(20):
            who = visitor(first.config, f"visitor{n}@example.com")
            blocking = first.decide(who, ["segment_only", "ab"])
            on_loop = asyncio.run(second.decide_async(who, ["segment_only", "ab"]))
            assert {k: (d.enabled, dict(d.variables)) for k, d in blocking.items()} == {
                k: (d.enabled, dict(d.variables)) for k, d in on_loop.items()
            }
            assert all(d.reason.value != "error" for d in [*blocking.values(), *on_loop.values()])
        assert first.flush_events(5) and second.flush_events(5)
        assert second.readiness()["redis"]["topology"] == "cluster"
    finally:
        first.close()
        second.close()
    records = gateway.records()
    assert len(records["membership_lookups"]) == 20, "one lookup per visitor for both workers"
    assert records["events"]["vwo_variationShown"] == 20, "one impression per visitor"


@pytest.mark.parametrize("client_certificate", [False, True], ids=["server-only", "mutual"])
def test_tls_with_an_acl_user(
    gateway: LocalGateway, redis_tls: RedisTlsServer, client_certificate: bool
) -> None:
    tls: dict[str, Any] = {"redis_ca_file": str(redis_tls.tls.ca)}
    if client_certificate:
        redis_tls.stop()
        redis_tls.client_certificates = True
        redis_tls.start()
        tls |= {
            "redis_cert_file": str(redis_tls.tls.cert),
            "redis_key_file": str(redis_tls.tls.key),
        }
    first = engine_for(gateway, None, redis_url=redis_tls.url, **tls)
    second = engine_for(gateway, None, redis_url=redis_tls.url, **tls)
    try:
        ada = visitor(first.config, "ada@example.com")
        for engine in (first, second):
            assert engine.decide(ada, ["segment_only"])["segment_only"].variables == {"tier": "vip"}
        redis_state = second.readiness()["redis"]
        assert redis_state["reachable"] and redis_tls.PASSWORD not in str(redis_state)
    finally:
        first.close()
        second.close()
    assert len(gateway.records()["membership_lookups"]) == 1, "the second worker read Redis"


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        ("password", "refused the credentials in VWO_HEAP_REDIS_URL"),
        ("ca", "CERTIFICATE_VERIFY_FAILED"),
    ],
)
def test_a_wrong_password_or_ca_is_one_clear_line_and_flags_still_come(
    gateway: LocalGateway, redis_tls: RedisTlsServer, caplog: Any, wrong: str, says: str
) -> None:
    url = redis_tls.url
    options: dict[str, Any] = {"redis_ca_file": str(redis_tls.tls.ca)}
    if wrong == "password":
        url = url.replace(redis_tls.PASSWORD, "not-the-password")
    else:
        options = {}
    caplog.set_level(logging.INFO, "vwo_heap_middleware")
    engine = engine_for(gateway, None, redis_url=url, **options)
    try:
        for n in range(5):
            decided = engine.decide(visitor(engine.config, f"v{n}@example.com"), ["segment_only"])
            assert decided["segment_only"].reason.value == "not_targeted"
        state = engine.readiness()["redis"]
    finally:
        engine.close()
    said = [r.getMessage() for r in caplog.records if r.msg == REDIS_FAILING]
    assert len(said) == 1 and says in said[0], said
    assert not state["reachable"] and says in state["error"]
    assert "not-the-password" not in caplog.text and redis_tls.PASSWORD not in caplog.text


def test_sentinel_finds_the_master(
    gateway: LocalGateway, redis_sentinel: RedisSentinelServers
) -> None:
    url = redis_sentinel.url
    first, second = (
        engine_for(gateway, None, redis_url=url),
        engine_for(gateway, None, redis_url=url),
    )
    try:
        ada = visitor(first.config, "ada@example.com")
        for engine in (first, second):
            assert engine.decide(ada, ["segment_only"])["segment_only"].variables == {"tier": "vip"}
        assert second.readiness()["redis"]["topology"] == "sentinel"
    finally:
        first.close()
        second.close()
    assert len(gateway.records()["membership_lookups"]) == 1, "the second worker read Redis"
    written = [
        str(name)
        for name in redis.Redis(port=redis_sentinel.master, decode_responses=True).keys("*:m:*")
    ]
    assert written and not any(name.endswith(":lock") for name in written)
