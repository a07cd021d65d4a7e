"""The event spool against the local gateway over HTTP: batches, outages, refusals, limits."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from tests.support import EngineFactory, gateway_env, visitor
from vwo_heap_middleware.evaluation.outcome import Event
from vwo_heap_middleware.gateway.events import (
    BATCH_PATH,
    EVENTS_CLOSED,
    EVENTS_DROPPED,
    EVENTS_LEFT,
    EVENTS_REFUSED,
    EVENTS_RETRY,
    SPOOL_FULL,
    EventSpool,
)
from vwo_heap_middleware.testing.gateway import LocalGateway

QUERY = {"en": "vwo_variationShown", "a": "123456", "env": "local-demo-sdk-key", "sn": "sdk"}


def event(n: int) -> Event:
    body = {"d": {"msgId": f"m{n}", "event": {"name": "vwo_variationShown"}}}
    return Event.of(body, QUERY)


def delivered(gateway: LocalGateway) -> list[str]:
    return [e["body"]["d"]["msgId"] for e in gateway.records()["event_log"]]


def test_events_go_in_batches_in_order(demo_gateway: LocalGateway) -> None:
    spool = EventSpool(10_000, demo_gateway.url, batch_size=500)
    demo_gateway.refuse_connections()  # so that all 1200 wait in the spool
    for n in range(1200):
        spool.add(event(n))
    demo_gateway.accept_connections()
    assert spool.flush(10)
    assert delivered(demo_gateway) == [f"m{n}" for n in range(1200)]
    assert demo_gateway.records()["requests"]["batch_events"] == 3, "500 + 500 + 200"
    assert spool.stats()["events_sent"] == 1200
    names = {t.name for t in threading.enumerate()}
    assert "vwo-heap-events" in names
    spool.close(1)


def test_an_outage_loses_nothing_and_the_backlog_drains(
    demo_gateway: LocalGateway, caplog: pytest.LogCaptureFixture
) -> None:
    spool = EventSpool(10_000, demo_gateway.url)
    demo_gateway.refuse_connections()
    for n in range(50):
        spool.add(event(n))
    assert not spool.flush(0.5), "the gateway is down"
    demo_gateway.faults.set("batch_events", status=503)
    demo_gateway.accept_connections()
    assert not spool.flush(0.5), "it answers 503"
    assert spool.stats()["events_queued"] == 50
    demo_gateway.faults.clear()
    assert spool.flush(10)
    assert sorted(delivered(demo_gateway)) == sorted(f"m{n}" for n in range(50)), "once each"
    assert spool.stats()["events_dropped"] == 0
    assert any(
        r.msg == EVENTS_RETRY and r.getMessage().startswith("cannot send 50 events")
        for r in caplog.records
    )
    with caplog.at_level("INFO", logger="vwo_heap_middleware"):
        spool.close(1)
    assert EVENTS_CLOSED % (50, 0) in caplog.text


def test_a_refused_batch_is_dropped_counted_and_logged(
    demo_gateway: LocalGateway, caplog: pytest.LogCaptureFixture
) -> None:
    demo_gateway.faults.set("batch_events", status=400)
    spool = EventSpool(100, demo_gateway.url)
    spool.add(event(1))
    assert spool.flush(5)
    assert spool.stats()["events_dropped"] == 1
    assert EVENTS_REFUSED % (1, "HTTP 400") in caplog.text
    spool.close(1)


def test_a_full_spool_drops_new_events_and_says_so_once(
    demo_gateway: LocalGateway, caplog: pytest.LogCaptureFixture
) -> None:
    demo_gateway.refuse_connections()
    spool = EventSpool(3, demo_gateway.url)
    for n in range(10):
        spool.add(event(n))
    assert spool.stats()["events_dropped"] == 7
    assert caplog.text.count("the event spool is full") == 1, "logged once per interval"
    assert EVENTS_DROPPED % (1, SPOOL_FULL % 3, 1) in caplog.text
    demo_gateway.accept_connections()
    assert spool.flush(10)
    assert delivered(demo_gateway) == ["m0", "m1", "m2"]
    spool.close(1)


def test_close_flushes_within_its_deadline_and_logs_what_is_left(
    demo_gateway: LocalGateway, caplog: pytest.LogCaptureFixture
) -> None:
    spool = EventSpool(100, demo_gateway.url)
    spool.add(event(0))
    spool.close(5)
    assert delivered(demo_gateway) == ["m0"]
    down = EventSpool(100, demo_gateway.url)
    demo_gateway.refuse_connections()
    for n in range(4):
        down.add(event(n))
    down.close(0.3)
    assert EVENTS_LEFT % 4 in caplog.text
    assert down.stats()["events_dropped"] == 4
    down.add(event(9))
    assert down.stats()["events_dropped"] == 5, "closed: nothing more is taken"


def test_offline_events_are_held_not_sent(demo_gateway: LocalGateway) -> None:
    spool = EventSpool(100, demo_gateway.url, deliver=False)
    spool.add(event(1))
    assert spool.stats()["events_held"] == 1 and spool.flush(0.1)
    assert demo_gateway.records()["requests"].get("batch_events", 0) == 0


def test_a_reset_spool_starts_empty(demo_gateway: LocalGateway) -> None:
    spool = EventSpool(100, demo_gateway.url)
    demo_gateway.refuse_connections()
    spool.add(event(1))
    spool.close(0.2)
    spool.reset()  # an engine started again (or a forked child, which has no sender thread)
    demo_gateway.accept_connections()
    assert spool.stats()["events_dropped"] == 0, "the counts start afresh too"
    spool.add(event(2))
    assert spool.flush(5)
    assert delivered(demo_gateway) == ["m2"]
    assert spool.stats()["events_sent"] == 1
    spool.close(1)


def test_the_engine_spools_every_impression_of_the_sdk(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    demo_gateway.refuse_connections()
    for n in range(30):
        engine.decide(visitor(engine.config, f"user{n}@example.com"), ["new_banner"])
    demo_gateway.accept_connections()
    assert engine.flush_events(10)
    shown = [e for e in demo_gateway.records()["event_log"] if e["name"] == "vwo_variationShown"]
    assert len(shown) == 30
    assert demo_gateway.records()["requests"].get("events", 0) == 0, f"all through {BATCH_PATH}"


def test_a_flush_retries_a_failing_gateway_without_hammering_it(demo_gateway: LocalGateway) -> None:
    demo_gateway.faults.set("batch_events", status=503)
    spool = EventSpool(100, demo_gateway.url)
    spool.add(event(1))
    assert not spool.flush(1.0)
    tries = demo_gateway.records()["requests"]["batch_events"]
    assert 2 <= tries <= 8, f"{tries} tries in one second"
    spool.close(0)


def test_a_short_lived_process_drops_nothing_at_exit(demo_gateway: LocalGateway) -> None:
    """Issue: ``flask routes`` and the like printed "event spool full (150000 events): dropped
    1 events" at exit: the settings load still under way made the SDK's init event after the
    spool had closed. The settings thread now stops first; a late event says why it is lost."""
    env = gateway_env(demo_gateway)
    program = (
        "from vwo_heap_middleware import Config, FlagEngine\n"
        "engine = FlagEngine(Config.from_env())\n"
        "engine.start()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "dropped" not in done.stderr and "full" not in done.stderr, done.stderr
