"""VWO user aliasing through the local gateway: a login keeps the anonymous visit's bucket, links
are made once and only from trusted identities, an identity that has an alias keeps it, and the
gateway failing never fails a request."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.sdk_probe import probe
from tests.support import EngineFactory, RedisServer, v5, wait_until
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.evaluation.custom_events import TrackStatus
from vwo_heap_middleware.gateway.redis_store import digest
from vwo_heap_middleware.testing.gateway import LocalGateway, compile_flags
from vwo_heap_middleware.visitor import RequestFacts, Visitor, build_visitor

AB = "checkout_ab"
ALIAS_FLAGS = {
    "account_id": 654321,
    "sdk_key": "alias-key",
    "flags": [
        {
            "key": AB,
            "variables": {"color": "grey"},
            "metrics": ["purchase"],
            "rules": [
                {
                    "type": "ab_test",
                    "variations": [
                        {"name": "control", "weight": 50, "variables": {"color": "grey"}},
                        {"name": "green", "weight": 50, "variables": {"color": "green"}},
                    ],
                }
            ],
        },
    ],
}
ANONYMOUS = "7001002003004005"  # Heap's userId on the device the visitor logs in from
SECOND_DEVICE = "7009008007006005"


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway(compile_flags(ALIAS_FLAGS)) as served:
        yield served


def anonymous(config: Config, user_id: str = ANONYMOUS) -> Visitor:
    return build_visitor(config, RequestFacts(cookie=v5(None, user_id=user_id)), None)


def logged_in(
    config: Config, identity: str, user_id: str = ANONYMOUS, resolver: bool = True
) -> Visitor:
    """After ``heap.identify``: the resolver's identity (or Heap's cookie's) beside Heap's
    anonymous ``userId``."""
    cookie = v5(None if resolver else identity, user_id=user_id)
    return build_visitor(config, RequestFacts(cookie=cookie), None, identity if resolver else None)


def color(engine: FlagEngine, visitor: Visitor) -> Any:
    return engine.decide(visitor, [AB])[AB].variables["color"]


def calls(gateway: LocalGateway, endpoint: str) -> list[dict[str, Any]]:
    alias_calls = gateway.app.recorder.snapshot()["alias_calls"]
    return [call for call in alias_calls if call["endpoint"] == endpoint]


@pytest.fixture
def switcher(gateway: LocalGateway, make_engine: EngineFactory) -> str:
    """An identity bucketed apart from ``ANONYMOUS`` when nothing links them: so a test
    that keeps the bucket through a login can fail."""
    plain = make_engine(gateway)
    before = color(plain, anonymous(plain.config))
    for n in range(200):
        identity = f"user{n}@example.com"
        if color(plain, logged_in(plain.config, identity)) != before:
            return identity
    raise AssertionError("no identity is bucketed apart from the anonymous id")


def test_a_login_keeps_the_anonymous_visits_bucket(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str
) -> None:
    engine = make_engine(gateway, aliasing=True)
    before = color(engine, anonymous(engine.config))
    assert color(engine, logged_in(engine.config, switcher)) == before
    wait_until(lambda: gateway.app.aliases.get(switcher) == ANONYMOUS, what="the link")
    (linked,) = calls(gateway, "set")
    assert linked["body"] == {"userId": ANONYMOUS, "aliasId": switcher}
    assert linked["query"] == {
        "accountId": "654321",
        "sdkKey": "alias-key",
        "userId": ANONYMOUS,
        "aliasId": switcher,
    }
    wait_until(lambda: engine.stats()["aliases_linked"] == 1, what="the link counted")

    # Another worker (nothing cached), the same person on a second device: the alias is
    # asked for and kept (never set again), so they keep the bucket they began in.
    other = make_engine(gateway, aliasing=True)
    assert color(other, logged_in(other.config, switcher, SECOND_DEVICE)) == before
    assert gateway.app.aliases[switcher] == ANONYMOUS
    assert len(calls(gateway, "set")) == 1
    flags_user = other.aliases.known(logged_in(other.config, switcher, SECOND_DEVICE))
    assert flags_user.user_id == ANONYMOUS and flags_user.aliased_from == switcher


def alias_calls(gateway: LocalGateway) -> list[tuple[str, str, str]]:
    """The alias calls made, as comparable values, in a stable order."""
    made = gateway.app.recorder.snapshot()["alias_calls"]
    return sorted(
        (call["endpoint"], json.dumps(call["query"], sort_keys=True), json.dumps(call["body"]))
        for call in made
    )


def test_the_sdk_makes_the_same_alias_calls_and_decisions(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str
) -> None:
    """VWO's SDK with ``is_aliasing_enabled``, where the app calls ``set_alias`` at login, and
    this package, where the middleware does: the same calls, the same decisions.

    One difference, the SDK's: it reads the gateway's ``[]`` (no alias) as no answer and fails
    the call (``getFlag failed ... Response is null``): every visitor without an alias gets the
    flag off. VWO's Java SDK reads ``[]`` as "no alias", as this package does; the decision
    before the login is compared with the SDK's without aliasing."""
    gateway.app.recorder.reset()
    before = {"id": ANONYMOUS, "custom_variables": {}}
    after = {"id": switcher, "custom_variables": {"heap_identity": switcher}}
    steps = [[AB, before], ["@alias", ANONYMOUS, switcher], [AB, after]]
    theirs = probe(gateway.url, "654321", "alias-key", steps, aliasing=True)["answers"]
    sdk_calls = alias_calls(gateway)
    assert theirs[1] == {"alias_set": True}

    gateway.app.aliases.clear()
    gateway.app.recorder.reset()
    engine = make_engine(gateway, aliasing=True)
    ours = [
        engine.decide(anonymous(engine.config), [AB])[AB],
        engine.decide(logged_in(engine.config, switcher), [AB])[AB],
    ]
    wait_until(lambda: len(alias_calls(gateway)) == len(sdk_calls), what="the link")
    assert alias_calls(gateway) == sdk_calls
    assert [call[0] for call in sdk_calls] == ["get", "get", "set"]
    assert (theirs[0]["enabled"], theirs[0]["variables"]) == (False, {}), "the SDK's defect"
    (plain,) = probe(gateway.url, "654321", "alias-key", [[AB, before]])["answers"]
    sdk_decisions = [(answer["enabled"], answer["variables"]) for answer in (plain, theirs[2])]
    assert [(d.enabled, dict(d.variables)) for d in ours] == sdk_decisions
    assert ours[0].variables == ours[1].variables  # the bucket kept, by both


def test_a_returning_visitor_asks_the_gateway_nothing_more(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str
) -> None:
    engine = make_engine(gateway, aliasing=True)
    color(engine, logged_in(engine.config, switcher))
    asked = len(calls(gateway, "get"))
    for _ in range(5):
        color(engine, logged_in(engine.config, switcher))
    assert len(calls(gateway, "get")) == asked == 1
    assert engine.stats()["alias_calls"] == 1


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "alias_client_identities"])
def test_client_identities_link_only_when_allowed(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str, opt_in: bool
) -> None:
    """Heap's cookie can name anyone: by default its identity decides (it is trusted for
    that) but never writes an alias that would move the named person's bucket."""
    engine = make_engine(gateway, aliasing=True, alias_client_identities=opt_in)
    before = color(engine, anonymous(engine.config))
    after = color(engine, logged_in(engine.config, switcher, resolver=False))
    if opt_in:
        wait_until(lambda: gateway.app.aliases.get(switcher) == ANONYMOUS, what="the link")
        assert after == before
    else:
        engine.flush_events(5.0)
        assert calls(gateway, "set") == [] and after != before
        assert [call["query"]["userId"] for call in calls(gateway, "get")] == [
            f'["{ANONYMOUS}"]',
            f'["{switcher}"]',
        ]


def test_conversions_and_attributes_go_as_the_canonical_id(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str
) -> None:
    engine = make_engine(gateway, aliasing=True)
    color(engine, anonymous(engine.config))
    color(engine, logged_in(engine.config, switcher))
    fresh = make_engine(gateway, aliasing=True)  # nothing cached: the lookup runs behind
    wait_until(lambda: switcher in gateway.app.aliases, what="the link")
    ada = logged_in(fresh.config, switcher, SECOND_DEVICE)
    assert fresh.track(ada, "purchase", {"revenue": 30.0}).status is TrackStatus.QUEUED
    assert fresh.set_attributes(ada, {"plan": "gold"})
    assert fresh.flush_events(5.0) and engine.flush_events(5.0)
    records = gateway.app.recorder.snapshot()
    assert (records["custom_events"], records["attribute_syncs"]) == (1, 1)
    by_name = {entry["name"]: entry["body"] for entry in records["event_log"]}
    shown = by_name["vwo_variationShown"]["d"]["visId"]  # the anonymous visit's impression
    assert by_name["purchase"]["d"]["visId"] == by_name["vwo_syncVisitorProp"]["d"]["visId"]
    assert by_name["purchase"]["d"]["visId"] == shown


def test_a_failing_gateway_never_fails_the_request(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str, caplog: Any
) -> None:
    engine = make_engine(gateway, aliasing=True, non_membership_ttl=0.0)
    gateway.app.faults.set("set_alias", status=503)
    caplog.set_level(logging.INFO, "vwo_heap_middleware")
    before = color(engine, anonymous(engine.config))
    assert color(engine, logged_in(engine.config, switcher)) == before  # linked in this worker
    wait_until(lambda: engine.stats()["alias_link_failures"] == 1, what="the failed link")
    assert switcher not in gateway.app.aliases
    assert switcher not in caplog.text, "an identity never reaches the log"
    gateway.app.faults.clear()
    color(engine, logged_in(engine.config, switcher))  # its next login links it
    wait_until(lambda: gateway.app.aliases.get(switcher) == ANONYMOUS, what="the link")

    gateway.app.faults.set("get_alias", status=500)
    decided = engine.decide(logged_in(engine.config, "someone@example.com"), [AB])[AB]
    assert decided.reason.value == "not_targeted" or decided.enabled  # served, no error


def test_the_event_loop_asks_for_the_alias_itself(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str
) -> None:
    engine = make_engine(gateway, aliasing=True)

    async def both() -> tuple[Any, Any]:
        first = await engine.decide_async(anonymous(engine.config), [AB])
        second = await engine.decide_async(logged_in(engine.config, switcher), [AB])
        return first[AB].variables["color"], second[AB].variables["color"]

    before, after = asyncio.run(both())
    assert before == after
    wait_until(lambda: gateway.app.aliases.get(switcher) == ANONYMOUS, what="the link")


def test_explain_says_the_user_id_came_through_an_alias(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str
) -> None:
    engine = make_engine(gateway, aliasing=True)
    color(engine, logged_in(engine.config, switcher))
    wait_until(lambda: switcher in gateway.app.aliases, what="the link")
    explained = make_engine(gateway, aliasing=True).explain(AB, logged_in(engine.config, switcher))
    assert explained.alias == switcher and explained.context["id"] == ANONYMOUS
    assert "came through an alias" in "\n".join(explained.lines())
    assert explained.to_dict()["alias_of"] == switcher


def test_with_redis_a_fleet_links_once(
    gateway: LocalGateway, make_engine: EngineFactory, switcher: str, redis_server: RedisServer
) -> None:
    """Two workers see the same login at once: one link for the fleet; the second device's
    login, on another worker, keeps the first one's."""
    workers = [make_engine(gateway, aliasing=True, redis_url=redis_server.url) for _ in range(2)]
    for worker in workers:  # both have learnt that the identity has no alias yet
        without_cookie = build_visitor(worker.config, RequestFacts(), None, switcher)
        color(worker, without_cookie)
    for worker in workers:  # so both link this login: the fleet's claim lets one through
        color(worker, logged_in(worker.config, switcher))

    def both_done() -> bool:
        done = [
            w.stats()["aliases_linked"] + w.stats()["aliases_linked_elsewhere"] for w in workers
        ]
        return sum(done) == 2

    wait_until(both_done, what="both workers' links")
    assert len(calls(gateway, "set")) == 1 and gateway.app.aliases[switcher] == ANONYMOUS
    third = make_engine(gateway, aliasing=True, redis_url=redis_server.url)
    color(third, logged_in(third.config, switcher, SECOND_DEVICE))
    assert len(calls(gateway, "set")) == 1 and gateway.app.aliases[switcher] == ANONYMOUS


@pytest.mark.parametrize(
    "kept",
    ['["", 1e12]', "[42, 1e12]", f'["{"7" * 300}", 1e12]', '["a\\u0000b", 1e12]', "[", '"x"'],
    ids=["blank", "number", "too-long", "control-character", "not-json", "not-a-pair"],
)
def test_a_tampered_alias_in_redis_counts_as_absent(
    gateway: LocalGateway,
    make_engine: EngineFactory,
    switcher: str,
    redis_server: RedisServer,
    kept: str,
) -> None:
    """Redis is shared: an alias kept there is checked like input. Junk is never a user id: the
    gateway is asked, the link is made, and the claim a fleet takes is checked too."""
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"vwo-heap:654321:a:{digest(switcher)}", kept)
    client.set(f"vwo-heap:654321:alias:{digest(switcher)}", "\x00")
    engine = make_engine(gateway, aliasing=True, redis_url=redis_server.url)
    before = color(engine, anonymous(engine.config))
    assert color(engine, logged_in(engine.config, switcher)) == before
    assert [call["query"]["userId"] for call in calls(gateway, "get")][-1] == f'["{switcher}"]'
    assert engine.aliases.known(logged_in(engine.config, switcher)).user_id == ANONYMOUS
    wait_until(lambda: gateway.app.aliases.get(switcher) == ANONYMOUS, what="the link")
