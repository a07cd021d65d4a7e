"""Observers see requests, decisions, lookups and settings; their failures stay theirs."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.support import EngineFactory, visitor
from vwo_heap_middleware import FlagDecision, open_request
from vwo_heap_middleware.observers import OBSERVER_FAILED, Observer, RequestView
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.visitor import RequestFacts


class Recorder(Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def request_opened(self, flags: RequestView) -> None:
        self.seen.append(("opened", flags.user_id))

    def flag_read(self, flags: RequestView, decision: FlagDecision) -> None:
        self.seen.append(("read", decision.key))

    def request_closed(self, flags: RequestView) -> None:
        self.seen.append(("closed", flags.user_id))

    def decided(self, decisions: Mapping[str, FlagDecision], cached: int) -> None:
        self.seen.append(("decided", (sorted(decisions), cached)))

    def lookup_done(self, kind: str, seconds: float, failed: bool) -> None:
        self.seen.append(("lookup", (kind, failed)))


def test_a_request_seen_from_outside(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    # a busy machine can take longer than the 100 ms lookup default; timing is not the point
    engine = make_engine(
        demo_gateway, flags=("premium_checkout",), lookup_timeout=5.0, evaluation_timeout=5.0
    )
    recorder = Recorder()
    engine.add_observer(recorder)
    with open_request(engine, RequestFacts(identity_header="ada@example.com"), None) as flags:
        flags.enabled("premium_checkout")
        flags.enabled("premium_checkout")  # a second read of one key is not reported again
    assert recorder.seen == [
        ("lookup", ("membership", False)),
        ("decided", (["premium_checkout"], 0)),
        ("opened", "ada@example.com"),
        ("read", "premium_checkout"),
        ("closed", "ada@example.com"),
    ]
    recorder.seen.clear()
    engine.decide(visitor(engine.config, "ada@example.com"), ["premium_checkout"])
    assert recorder.seen == [("decided", (["premium_checkout"], 1))], "from the cache"


def test_a_failing_observer_never_fails_the_request(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Observer):
        def flag_read(self, flags: RequestView, decision: FlagDecision) -> None:
            raise RuntimeError("exporter down")

    engine = make_engine(demo_gateway)
    engine.add_observer(Broken())
    for _ in range(2):
        with open_request(engine, RequestFacts(identity_header="ada@example.com"), None) as flags:
            assert flags.enabled("new_banner")
    assert caplog.text.count(OBSERVER_FAILED % ("Broken", "flag_read")) == 1, "logged once"
