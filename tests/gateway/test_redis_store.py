"""Redis shared by engines: memberships, sticky decisions, impressions once; against a real
redis-server and the local gateway. Two engines in one process stand in for two workers here;
tests/test_redis_hosts.py runs real servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support import DATA, RedisServer, visitor
from vwo_heap_middleware import Config, FlagEngine
from vwo_heap_middleware.decision import Reason
from vwo_heap_middleware.evaluation.outcome import Event
from vwo_heap_middleware.gateway.redis_store import RedisStore, digest
from vwo_heap_middleware.offline.flags_file import load_flags_file
from vwo_heap_middleware.testing.gateway import LocalGateway


def config(redis_server: RedisServer, **kwargs: Any) -> Config:
    return Config(
        account_id="424242",
        sdk_key="all-rules-key",
        gateway_url="http://127.0.0.1:9",
        redis_url=redis_server.url,
        **kwargs,
    )


def everything_stored(redis_server: RedisServer) -> bytes:
    client = redis.Redis.from_url(redis_server.url)
    return b"".join(key + (client.get(key) or b"") for key in client.scan_iter("*"))


def test_memberships_are_shared_and_hold_no_identity(redis_server: RedisServer) -> None:
    one, other = RedisStore(config(redis_server)), RedisStore(config(redis_server))
    assert one.fetch_once("m", ("vip", "ada@example.com"), lambda: True, lambda _: 60) is True
    assert one.fetch_once("m", ("vip", "bob@example.com"), lambda: False, lambda _: 60) is False
    found = other.answers(
        "m", [("vip", "ada@example.com"), ("vip", "bob@example.com"), ("vip", "x")]
    )
    assert {key: kept.value for key, kept in found.items()} == {
        ("vip", "ada@example.com"): True,
        ("vip", "bob@example.com"): False,
    }
    assert all(59 < kept.fresh_for <= 60 for kept in found.values())
    stored = everything_stored(redis_server)
    assert b"ada@example.com" not in stored and digest("ada@example.com").encode() in stored


def test_one_worker_asks_the_gateway_for_a_key(redis_server: RedisServer) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)
    answers: list[bool] = []

    def gateway() -> bool:
        calls.append(1)
        time.sleep(0.02)  # the gateway's answer takes a while: the others wait for it in Redis
        return True

    def worker() -> None:
        store = RedisStore(config(redis_server, lookup_timeout=2.0))  # a process of its own
        barrier.wait()
        found = store.fetch_once("m", ("vip", "grace@example.com"), gateway, lambda _: 60)
        answers.append(found)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [True] * 8
    assert calls == [1]


def test_sticky_decisions_keep_no_user_id(redis_server: RedisServer) -> None:
    sticky = RedisStore(config(redis_server)).storage()
    sticky.set(
        {
            "featureKey": "ab",
            "userId": "ada@example.com",
            "experimentVariationId": 2,
            "rolloutId": None,
        }
    )
    assert sticky.get("ab", "ada@example.com") == {
        "featureKey": "ab",
        "userId": "ada@example.com",
        "experimentVariationId": 2,
    }
    assert sticky.get("ab", "bob@example.com") is None
    assert b"ada@example.com" not in everything_stored(redis_server)


def test_an_impression_once_per_visitor_campaign_and_variation(redis_server: RedisServer) -> None:
    store = RedisStore(config(redis_server))
    query = {"en": "vwo_variationShown"}

    def shown(campaign: int, visitor_uuid: str) -> Event:
        body = {
            "d": {"visId": visitor_uuid, "event": {"props": {"id": campaign, "variation": "1"}}}
        }
        return Event.of(body, query)

    assert store.first_impression(shown(1, "A"))
    assert not store.first_impression(shown(1, "A")), "another worker sent it"
    assert store.first_impression(shown(2, "A")) and store.first_impression(shown(1, "B"))
    assert store.first_impression(Event.of({"d": {}}, {"en": "vwo_fmeSdkInit"})), (
        "not an impression"
    )


def test_a_dead_redis_costs_nothing_but_redis(redis_server: RedisServer) -> None:
    store = RedisStore(config(redis_server, redis_timeout=0.05))
    redis_server.stop()
    started = time.monotonic()
    for n in range(20):
        assert store.answers("m", [("vip", f"u{n}")]) == {}
        assert store.fetch_once("m", ("vip", f"u{n}"), lambda: True, lambda _: 60) is True, (
            "the gateway answers"
        )
        assert store.first_impression(Event.of({"d": {}}, {"en": "vwo_variationShown"})), "sent"
    assert time.monotonic() - started < 2.0
    assert store.breaker.is_open, "after a few failures Redis is not even tried"


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DATA / "flags_all_rules.toml") as gateway:
        gateway.set_segments({"vip_list": ["ada@example.com"]})
        yield gateway


def engine_for(
    gateway: LocalGateway, redis_server: RedisServer | None, **kwargs: object
) -> FlagEngine:
    """``redis_server``'s URL, or another given as ``redis_url=``."""
    if redis_server is not None:
        kwargs["redis_url"] = redis_server.url
    engine = FlagEngine(
        Config(
            account_id="424242",
            sdk_key="all-rules-key",
            gateway_url=gateway.url,
            settings_refresh_interval=1.0,
            lookup_timeout=10.0,  # an answer, even on a busy machine
            evaluation_timeout=10.0,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    engine.start()
    assert engine.wait_ready(10)
    return engine


def test_two_workers_ask_the_gateway_once_and_send_one_impression(
    gateway: LocalGateway, redis_server: RedisServer
) -> None:
    first, second = engine_for(gateway, redis_server), engine_for(gateway, redis_server)
    try:
        ada = visitor(first.config, "ada@example.com")
        for engine in (first, second):
            decision = engine.decide(ada, ["segment_only"])["segment_only"]
            assert decision.variables == {"tier": "vip"}
        assert first.flush_events(5) and second.flush_events(5)
    finally:
        first.close()
        second.close()
    records = gateway.records()
    assert len(records["membership_lookups"]) == 1, "the second worker read Redis"
    assert records["events"]["vwo_variationShown"] == 1, "one impression for both"


def test_visitors_keep_their_variation_when_the_split_changes(
    gateway: LocalGateway, redis_server: RedisServer
) -> None:
    users = [f"user-{n}" for n in range(40)]

    def colors(engine: FlagEngine) -> list[str]:
        return [
            engine.decide(visitor(engine.config, u), ["ab"])["ab"].variables["color"] for u in users
        ]

    sticky, plain = engine_for(gateway, redis_server), engine_for(gateway, None)
    try:
        before = colors(sticky)
        assert colors(plain) == before and set(before) == {"grey", "green"}
        assert "Redis storage" in sticky.readiness()["decided_by_sdk"]["ab"], "the SDK keeps it"
        assert "ab" not in plain.readiness()["decided_by_sdk"], "natively, the same colors"
        settings = load_flags_file(DATA / "flags_all_rules.toml")
        ab = next(c for c in settings["campaigns"] if c["key"] == "ab_ab_test1")
        ab["variations"][0]["weight"], ab["variations"][1]["weight"] = 90, 10
        revision = sticky.readiness()["revision"]
        gateway.set_settings(settings)
        for engine in (sticky, plain):
            assert engine.wait_ready(1)
            deadline = time.monotonic() + 10
            while engine.readiness()["revision"] == revision and time.monotonic() < deadline:
                time.sleep(0.05)
        assert colors(sticky) == before, "sticky: the same variation after the change"
        assert colors(plain) != before, "without Redis some visitors move (the point of it)"
    finally:
        sticky.close()
        plain.close()


def test_user_details_are_shared_too(raw_gateway: LocalGateway, redis_server: RedisServer) -> None:
    engines = [
        FlagEngine(
            Config(
                account_id="999001",
                sdk_key="raw-sdk-key",
                gateway_url=raw_gateway.url,
                redis_url=redis_server.url,
            )
        )
        for _ in range(2)
    ]
    try:
        for engine in engines:
            engine.start()
            assert engine.wait_ready(10)
            berlin = visitor(
                engine.config, "someone@example.com", peer="198.51.100.4", user_agent="UA"
            )
            assert engine.decide(berlin, ["berlin_only"])["berlin_only"].enabled
    finally:
        for engine in engines:
            engine.close()
    assert raw_gateway.records()["requests"]["user_details"] == 1, "the second read Redis"
    assert b"198.51.100.4" not in everything_stored(redis_server), "the IP is hashed"


@pytest.mark.parametrize(
    "kept",
    ["[" * 5000, "[false, Infinity]", "[true, 9e99]", '"yes"', "[1, 2]", '["true", 1e12]'],
    ids=["deep", "infinite", "far-future", "truthy-string", "number", "string-bool"],
)
@pytest.mark.parametrize("on_loop", [False, True], ids=["blocking", "event-loop"])
def test_a_tampered_membership_in_redis_counts_as_absent_and_is_overwritten(
    gateway: LocalGateway, redis_server: RedisServer, kept: str, on_loop: bool
) -> None:
    """Issue: junk made every decision for the visitor an error, ``[false, Infinity]`` locked
    a member out for good, ``[true, 9e99]`` let a non-member in, any truthy JSON counted."""
    client = redis.Redis.from_url(redis_server.url)
    for who in ("ada@example.com", "bob@example.com"):
        client.set(f"vwo-heap:424242:m:{{{digest(who)}}}:vip_list", kept)
    engine = engine_for(gateway, redis_server)
    try:
        for who, member in (("ada@example.com", True), ("bob@example.com", False)):
            person = visitor(engine.config, who)
            if on_loop:
                decided = asyncio.run(engine.decide_async(person, ["segment_only"]))
            else:
                decided = engine.decide(person, ["segment_only"])
            decision = decided["segment_only"]
            assert decision.reason is (Reason.TARGETED if member else Reason.NOT_TARGETED)
            assert decision.enabled is member
            value, fresh_until = json.loads(
                client.get(f"vwo-heap:424242:m:{{{digest(who)}}}:vip_list") or b""
            )
            assert value is member and fresh_until < time.time() + 3600, "overwritten"
    finally:
        engine.close()
    assert len(gateway.records()["membership_lookups"]) == 2, "the gateway was asked"
