"""Returning visitors recalled by their request's facts, and decisions that live exactly as long
as the answers they were made on."""

from __future__ import annotations

import gc
import json
import math
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, EngineFactory, wait_until
from vwo_heap_middleware import RequestFacts, build_visitor, open_request, requires_flag
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.evaluation.caches import DecisionCache, ExpiringMap, ReturningVisitors
from vwo_heap_middleware.starlette import HeapFlagsMiddleware
from vwo_heap_middleware.testing import override_flags
from vwo_heap_middleware.testing.gateway import LocalGateway

FLAGS = ("premium_checkout", "new_banner")
ADA = RequestFacts(identity_header="ada@example.com", user_agent="UA", peer="203.0.113.9")


def lookups(gateway: LocalGateway) -> int:
    return len(gateway.records()["membership_lookups"])


def decide(engine: FlagEngine, facts: RequestFacts = ADA) -> dict[str, Any]:
    with open_request(engine, facts) as flags:
        return {key: flags[key] for key in FLAGS}


def test_a_returning_visitor_is_recalled_with_the_same_decisions(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, flags=FLAGS)
    assert engine.recall(ADA) is None, "never seen"
    first = decide(engine)
    recalled = engine.recall(ADA)
    assert recalled is not None and recalled[1] == first
    assert recalled[0]().identity == "ada@example.com", "built when asked for"
    assert decide(engine) == first and engine.stats()["returning_visitors"] == 1
    other = RequestFacts(identity_header="ada@example.com", user_agent="UA", peer="203.0.113.10")
    assert engine.recall(other) is None, "another address is other facts"


def test_no_recall_when_a_hook_shapes_the_visitor_or_an_override_is_on(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    hooked = make_engine(demo_gateway, flags=FLAGS, context_enricher=lambda request: {"a": 1})
    decide(hooked)
    assert hooked.recall(ADA) is None and hooked.stats()["returning_visitors"] == 0
    engine = make_engine(demo_gateway, flags=FLAGS)
    decide(engine)
    with override_flags({"premium_checkout": False}):
        assert engine.recall(ADA) is None
        assert decide(engine)["premium_checkout"].reason is Reason.OVERRIDE
    assert engine.recall(ADA) is not None, "the override is over"


def test_new_settings_forget_every_returning_visitor(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, flags=FLAGS)
    decide(engine)
    settings = json.loads(demo_gateway.app.settings_body)
    settings["version"] = int(settings.get("version", 1)) + 1
    engine.apply_settings(settings)
    assert engine.recall(ADA) is None


def test_decisions_on_failed_lookups_are_not_recalled(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, flags=FLAGS)
    demo_gateway.refuse_connections()
    try:
        decided = decide(engine)
    finally:
        demo_gateway.accept_connections()
    assert decided["premium_checkout"].reason is Reason.GATEWAY_ERROR
    assert engine.recall(ADA) is None
    assert decide(engine)["premium_checkout"].reason is Reason.TARGETED, "asked again"


def test_a_decision_lives_as_long_as_the_membership_answer_it_used(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(
        demo_gateway, flags=FLAGS, non_membership_ttl=3, membership_ttl=300, decision_ttl=300
    )
    nobody = RequestFacts(identity_header="nobody@example.com")
    assert not decide(engine, nobody)["premium_checkout"].enabled
    assert decide(engine, ADA)["premium_checkout"].enabled
    assert lookups(demo_gateway) == 2
    decide(engine, nobody)
    decide(engine, ADA)
    assert lookups(demo_gateway) == 2, "both recalled within their answers' lives"

    def asked_again() -> bool:
        decide(engine, nobody)
        return lookups(demo_gateway) == 3

    wait_until(asked_again, timeout=15, what="the non-member decision to expire with its answer")
    decide(engine, ADA)
    assert lookups(demo_gateway) == 3, "the member's decision still holds (300 s)"


def test_starlette_makes_no_request_object_unless_something_needs_it(
    demo_gateway: LocalGateway, make_engine: EngineFactory, monkeypatch: Any
) -> None:
    made: list[Request] = []
    original = Request.__init__

    def counting(self: Request, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    handed: list[Request] = []

    def refuse(request: Request) -> PlainTextResponse:
        handed.append(request)
        return PlainTextResponse("no", status_code=403)

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @requires_flag("premium_checkout", handler=refuse)
    async def premium(request: Request) -> PlainTextResponse:
        return PlainTextResponse("premium")

    def requests_made(app: Any) -> int:
        with TestClient(app) as client:
            monkeypatch.setattr(Request, "__init__", counting)
            made.clear()
            assert client.get("/", headers={"X-Heap-Identity": "ada@example.com"}).text == "ok"
            monkeypatch.undo()
        return len(made)

    engine = make_engine(demo_gateway, flags=FLAGS)
    routes = [Route("/", page), Route("/premium", premium)]
    app = Starlette(routes=routes)
    app.add_middleware(HeapFlagsMiddleware, engine=engine)
    assert requests_made(app) == requests_made(Starlette(routes=routes)), "none of its own"
    with TestClient(app) as client:
        refused = client.get("/premium", headers={"X-Heap-Identity": "nobody@example.com"})
    assert refused.status_code == 403 and len(handed) == 1
    assert isinstance(handed[0], Request), "the guard's handler got the request, made for it"


def test_facts_are_told_apart_exactly() -> None:
    seen = RequestFacts(identity_header=b"ada@example.com", cookie="a=1")
    visitors = ReturningVisitors(10, "heap_identity", ("k", "j"))
    config = Config(account_id="1", sdk_key="k", gateway_url="http://x")
    decisions = {"k": FlagDecision("k", True), "j": FlagDecision("j", False)}
    ada = build_visitor(config, seen, None)
    visitors.remember(seen, "rev", ada, decisions, math.inf)
    recalled = visitors.recall(seen, "rev")
    assert recalled is not None and recalled[1] == decisions
    assert recalled[0]() == ada, "the same visitor back"
    assert visitors.recall(seen, "other revision") is None
    visitors.remember(seen, "rev", ada, {"k": FlagDecision("k", True)}, math.inf)
    again = visitors.recall(seen, "rev")
    assert again is not None and again[1] == decisions, "not the configured flags: not kept"
    near = [
        RequestFacts(identity_header="ada@example.com", cookie="a=1"),  # text, not bytes
        RequestFacts(identity_header=b"ada@example.com", cookie="a=1", user_agent=""),
        RequestFacts(identity_header=b"ada@example.com", cookie="a=1;"),
        RequestFacts(identity_header=b"ada@example.co", cookie="ma=1"),  # same bytes, joined
        RequestFacts(cookie="a=1", identity_header=b"ada@example.com", peer="10.0.0.1"),
    ]
    assert [visitors.recall(facts, "rev") for facts in near] == [None] * len(near)


def test_cache_keeps_decisions_until_reset() -> None:
    cache = DecisionCache(maxsize=2, ttl=60)
    decision = FlagDecision("a", True)
    cache.put("a user", decision)
    kept = cache.get("a user")
    assert kept == decision and len(cache) == 1
    assert kept is not None and kept.details.cached and not decision.details.cached
    assert cache.get("a other") is None
    cache.put("b 1", decision)
    cache.put("c 1", decision)
    assert 1 <= len(cache) <= 2, "bounded"
    cache.reset()
    assert len(cache) == 0 and cache.get("c 1") is None


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = DecisionCache(maxsize=10, ttl=0)
    cache.put("k", FlagDecision("k", True))
    assert cache.get("k") is None


def test_an_expiring_map_keeps_the_recent_within_its_bound() -> None:
    cache: ExpiringMap[str, int] = ExpiringMap(maxsize=8)
    for n in range(4):
        cache.put(f"k{n}", n, 100.0)  # a generation is full: it turns old
    assert cache.get("k0", 1.0) == (0, 100.0), "a hit in the old generation comes back young"
    for n in range(4, 8):
        cache.put(f"k{n}", n, 100.0)
    assert len(cache) <= 8
    assert cache.get("k1", 1.0) is None, "the least recently used made room"
    assert cache.get("k0", 1.0) == (0, 100.0) and cache.get("k7", 1.0) == (7, 100.0)
    assert cache.get("k7", 100.0) is None, "expired when read"


def test_what_is_cached_per_visitor_is_nothing_the_gc_walks() -> None:
    """Thousands of visitors cached: no object the garbage collector tracks is kept for any of
    them (it would walk them all at every full collection)."""
    config = Config(
        offline_flags=DEMO_FLAGS,
        offline_segments=DEMO_SEGMENTS,
        flags=("premium_checkout", "new_banner"),
    )
    engine = FlagEngine(config)

    def visit(n: int) -> None:
        facts = RequestFacts(identity_header=f"v{n}@example.com", peer="203.0.113.9")
        with open_request(engine, facts) as flags:
            flags.enabled("premium_checkout")

    try:
        for n in range(50):
            visit(n)
        gc.collect()
        gc.collect()
        before = len(gc.get_objects())
        for n in range(50, 2050):
            visit(n)
        gc.collect()
        gc.collect()
        kept = len(gc.get_objects()) - before
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["returning_visitors"] >= 1000 and stats["cached_decisions"] >= 2000
    assert kept < 100, f"{kept} tracked objects kept for 2,000 cached visitors"
