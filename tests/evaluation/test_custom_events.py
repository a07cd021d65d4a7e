"""Conversions and visitor attributes, built natively, against what VWO's SDK itself sends for
the same visitor and settings (``track_event``, ``set_attribute``) through the local gateway's
settings: the SDK is the oracle. Hostile input is refused with a clear result."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest

from tests.support import EngineFactory, visitor
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.evaluation.custom_events import (
    MAX_PROPERTIES,
    NOT_SENT,
    Tracked,
    TrackStatus,
    for_visitor,
)
from vwo_heap_middleware.evaluation.outcome import Event
from vwo_heap_middleware.testing.gateway import LocalGateway

VARYING_BODY = ("msgId", "sessionId")  # time-derived (the message id holds the millisecond)
VARYING_QUERY = ("eTime", "random")


def comparable(event: Event) -> tuple[dict[str, Any], dict[str, str]]:
    """The event without what differs between two sends of it: times and random ids."""
    body = event.body
    for name in VARYING_BODY:
        body["d"].pop(name)
    body["d"]["event"].pop("time")
    query = {k: v for k, v in event.query.items() if k not in VARYING_QUERY}
    return body, query


@pytest.fixture
def engine(demo_gateway: LocalGateway, make_engine: EngineFactory) -> FlagEngine:
    return make_engine(demo_gateway)


@pytest.mark.parametrize(
    "facts",
    [
        {},
        {"user_agent": "Mozilla/5.0 (X11)", "peer": "203.0.113.7"},
    ],
    ids=["bare", "ua-and-ip"],
)
@pytest.mark.parametrize(
    "properties",
    [{}, {"revenue": 12.5, "currency": "EUR", "items": 3, "gift": False}],
    ids=["no-properties", "revenue"],
)
def test_a_conversion_is_the_sdks_track_event(
    engine: FlagEngine, facts: dict[str, str], properties: dict[str, Any]
) -> None:
    ada = visitor(engine.config, "ada@example.com", **facts)
    assert ada.context is not None
    mine = for_visitor(engine._index, engine._sdk.facts(), ada.context, "purchase", properties)
    context, props = dict(ada.context), dict(properties)
    (theirs,) = engine._sdk.events_of(lambda client: client.track_event("purchase", context, props))
    assert isinstance(mine, Event)
    assert comparable(mine) == comparable(theirs)
    assert json.loads(mine.data)["d"]["event"]["props"]["isCustomEvent"] is True


@pytest.mark.parametrize(
    "values", [{"plan": "gold"}, {"plan": "gold", "seats": 3, "ratio": 0.5, "trial": True}]
)
def test_attributes_are_the_sdks_set_attribute(engine: FlagEngine, values: dict[str, Any]) -> None:
    grace = visitor(engine.config, "grace@example.com", user_agent="UA/1", peer="198.51.100.2")
    assert grace.context is not None
    mine = for_visitor(engine._index, engine._sdk.facts(), grace.context, None, values)
    context = dict(grace.context)
    (theirs,) = engine._sdk.events_of(lambda client: client.set_attribute(dict(values), context))
    assert isinstance(mine, Event)
    assert comparable(mine) == comparable(theirs)
    assert json.loads(mine.data)["d"]["visitor"]["props"]["plan"] == "gold"


def test_an_event_no_flag_measures_is_refused_like_the_sdk_does(
    engine: FlagEngine, caplog: pytest.LogCaptureFixture
) -> None:
    ada = visitor(engine.config, "ada@example.com")
    assert ada.context is not None
    context = dict(ada.context)
    sdk_sent = engine._sdk.events_of(lambda client: client.track_event("nope", context, {}))
    assert [e.query["en"] for e in sdk_sent] == ["vwo_sdkDebug"], "its error report, no event"
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        for _ in range(3):
            refused = engine.track(ada, "nope")
    assert not refused and refused.status is TrackStatus.UNKNOWN_EVENT
    assert sum(r.msg == NOT_SENT for r in caplog.records) == 1, "one log line, not one per call"


@pytest.mark.parametrize(
    ("name", "values", "says"),
    [
        ("x" * 300, {}, "1-255 printable"),
        ("pur\nchase", {}, "1-255 printable"),
        (42, {}, "must be a string"),
        ("purchase", {"nested": {"a": 1}}, "got dict"),
        ("purchase", {"revenue": math.inf}, "finite"),
        ("purchase", {"revenue": math.nan}, "finite"),
        ("purchase", {"big": 10**400}, "2**53"),
        ("purchase", {"note": "x" * 5000}, "printable characters"),
        ("purchase", {"bad\r\nkey": 1}, "1-255 printable"),
        ("purchase", {f"p{n}": n for n in range(MAX_PROPERTIES + 1)}, "at most 64"),
        ("purchase", {"isCustomEvent": False}, "VWO's own property"),
        ("purchase", ["revenue", 1], "mapping"),
    ],
)
def test_hostile_conversions_are_refused_clearly(
    engine: FlagEngine, name: Any, values: Any, says: str
) -> None:
    before = engine.stats()["events_queued"]
    refused = engine.track(visitor(engine.config, "ada@example.com"), name, values)
    assert isinstance(refused, Tracked) and refused.status is TrackStatus.INVALID
    assert says in refused.detail
    assert engine.stats()["events_queued"] == before, "nothing spooled"


@pytest.mark.parametrize(
    ("values", "says"),
    [({}, "no attributes"), ({"tags": ["a"]}, "got list"), (None, "mapping")],
)
def test_bad_attributes_are_refused_clearly(engine: FlagEngine, values: Any, says: str) -> None:
    refused = engine.set_attributes(visitor(engine.config, "ada@example.com"), values)
    assert refused.status is TrackStatus.INVALID and says in refused.detail


def test_no_user_and_not_ready_are_said(engine: FlagEngine) -> None:
    anonymous = visitor(engine.config)
    assert engine.track(anonymous, "purchase").status is TrackStatus.NO_USER
    cold = FlagEngine(engine.config)  # never started: no settings
    try:
        assert for_visitor(None, engine._sdk.facts(), {"id": "u"}, "purchase", {}) == Tracked(
            TrackStatus.NOT_READY, "no VWO settings loaded yet"
        )
    finally:
        cold.close()


def test_conversions_and_attributes_reach_the_gateway_through_the_spool(
    engine: FlagEngine, demo_gateway: LocalGateway
) -> None:
    ada = visitor(engine.config, "ada@example.com")
    assert engine.track(ada, "purchase", {"revenue": 30})
    assert engine.set_attributes(ada, {"plan": "gold"})
    assert engine.flush_events(5.0)
    records = demo_gateway.records()
    assert records["events"]["purchase"] == 1
    assert records["events"]["vwo_syncVisitorProp"] == 1
    sent = [e for e in records["event_log"] if e["name"] == "purchase"]
    assert sent[0]["body"]["d"]["event"]["props"]["revenue"] == 30
