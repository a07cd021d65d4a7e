"""The impression journal on its own: written before ``add`` returns, claimed after a
process's death (simulated: its descriptor closed with no goodbye), damaged and unusable
state said clearly, nothing raised at the caller."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from tests.support import wait_until
from vwo_heap_middleware.evaluation.outcome import Event
from vwo_heap_middleware.gateway import events as events_module
from vwo_heap_middleware.gateway.events import EventSpool
from vwo_heap_middleware.state.files import Owner
from vwo_heap_middleware.state.journal import Journal
from vwo_heap_middleware.testing.gateway import LocalGateway

SHOWN = "vwo_variationShown"
OWNER = Owner("123456", "k")


def event(n: int) -> Event:
    props = {"id": 1, "variation": "1"}
    body = {"d": {"msgId": f"m{n}", "visId": f"V{n}", "event": {"name": SHOWN, "props": props}}}
    return Event.of(body, {"en": SHOWN, "a": "123456", "env": "k"})


def spool(gateway_url: str, directory: Path, **options: object) -> EventSpool:
    made = EventSpool(10_000, gateway_url, state_dir=str(directory), owner=OWNER, linger=0.01)
    for name, value in options.items():
        setattr(made, name, value)
    made.start()
    return made


def journals(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.jsonl"))


def killed(made: EventSpool) -> None:
    """As SIGKILL leaves it: the journal's descriptor closed, nothing flushed or removed."""
    journal = made._journal
    assert journal is not None
    journal.forget()
    made._journal = None
    made.closed = True


def test_an_event_is_on_disk_before_add_returns(demo_gateway: LocalGateway, tmp_path: Path) -> None:
    demo_gateway.refuse_connections()
    try:
        made = spool(demo_gateway.url, tmp_path)
        made.add(event(1))
        (path,) = journals(tmp_path)
        lines = [json.loads(line) for line in path.read_bytes().splitlines()]
        assert lines[0]["s"] == 1 and lines[0]["d"]["d"]["msgId"] == "m1"
        assert oct(stat.S_IMODE(path.stat().st_mode)) == "0o600"
        killed(made)
    finally:
        demo_gateway.accept_connections()


def test_a_dead_processs_events_are_sent_by_the_next(
    demo_gateway: LocalGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    demo_gateway.refuse_connections()
    first = spool(demo_gateway.url, tmp_path)
    for n in range(40):
        first.add(event(n))
    killed(first)
    demo_gateway.accept_connections()
    demo_gateway.reset_records()
    with caplog.at_level(logging.WARNING):
        second = spool(demo_gateway.url, tmp_path)
        assert second.flush(5.0)
    received = demo_gateway.records()["events"].get("vwo_variationShown", 0)
    assert received == 40 and second.stats()["events_recovered"] == 40
    assert "40 events a stopped process left in" in caplog.text
    second.close(1.0)
    assert journals(tmp_path) == [], "a drained journal is removed at close"


def test_events_not_sent_at_close_stay_for_the_next_process(
    demo_gateway: LocalGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    demo_gateway.refuse_connections()
    first = spool(demo_gateway.url, tmp_path)
    for n in range(5):
        first.add(event(n))
    with caplog.at_level(logging.WARNING):
        first.close(0.2)
    assert "closing with 5 events not sent: kept in" in caplog.text
    assert first.stats()["events_dropped"] == 0, "kept, not lost"
    demo_gateway.accept_connections()
    demo_gateway.reset_records()
    second = spool(demo_gateway.url, tmp_path)
    assert second.flush(5.0)
    assert demo_gateway.records()["events"]["vwo_variationShown"] == 5
    second.close(1.0)


def test_a_living_processs_journal_is_left_alone(
    demo_gateway: LocalGateway, tmp_path: Path
) -> None:
    demo_gateway.refuse_connections()
    try:
        alive = spool(demo_gateway.url, tmp_path)
        alive.add(event(1))
        other = spool(demo_gateway.url, tmp_path)
        assert other.stats()["events_recovered"] == 0 and len(journals(tmp_path)) == 2
        killed(alive)
        killed(other)
    finally:
        demo_gateway.accept_connections()


def test_a_batch_in_flight_at_the_kill_is_counted_as_maybe_sent(tmp_path: Path) -> None:
    lines = [
        b'{"s":%d,"q":{"en":"vwo_variationShown","a":"123456","env":"k"},"d":{"d":{}}}\n' % n
        for n in range(1, 8)
    ]
    lines.insert(3, b'{"f":[1,3]}\n')
    lines.insert(4, b'{"a":3}\n')
    lines.append(b'{"f":[4,6]}\n')  # sent, no answer before the kill
    (tmp_path / f"events-{OWNER.tag}-1-dead-0.jsonl").write_bytes(b"".join(lines))
    made = EventSpool(100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(tmp_path))
    made.start()
    assert made.stats()["events_recovered"] == 4, "4 to 7: after the last delivered"
    assert made.stats()["events_maybe_resent"] == 3, "4 to 6 were in flight"
    killed(made)


def test_a_damaged_journal_gives_what_it_can_and_is_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = (
        b'{"s":1,"q":{"en":"vwo_variationShown","a":"123456","env":"k"},"d":{"d":{"msgId":"ok"}}}\n'
    )
    (tmp_path / f"events-{OWNER.tag}-2-dead-0.jsonl").write_bytes(
        good + b'{"s":2,"q":{"en"\n\xff\xfe junk\n'
    )
    (tmp_path / "notes.txt").write_text("not ours")
    with caplog.at_level(logging.ERROR):
        made = EventSpool(100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(tmp_path))
        made.start()
    assert made.stats()["events_recovered"] == 1
    assert "2 damaged lines in the impression journal" in caplog.text
    assert (tmp_path / f"events-{OWNER.tag}-2-dead-0.damaged").exists() and (
        tmp_path / "notes.txt"
    ).exists()
    killed(made)


def test_a_state_dir_that_cannot_be_written_means_memory_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    with caplog.at_level(logging.ERROR):
        made = EventSpool(100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(blocked / "state"))
        made.start()
        made.add(event(1))
    assert "cannot journal impressions in" in caplog.text and "in memory only" in caplog.text
    assert made.stats()["events_queued"] == 1, "kept in memory, nothing raised"
    made.close(0.0)


def test_a_full_disk_means_memory_only_from_then_on(caplog: pytest.LogCaptureFixture) -> None:
    full = Journal(Path("/dev/full"), os.open("/dev/full", os.O_WRONLY), 10**9, OWNER, "1-full", 0)
    with caplog.at_level(logging.ERROR):
        full.write(1, Journal.entry(event(1)))
    assert full.broken and "impressions are kept in memory only" in caplog.text
    full.write(2, Journal.entry(event(2)))  # no second log line, nothing raised
    assert caplog.text.count("in memory only") == 1
    full.forget()


def test_the_disk_budget_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    made = EventSpool(
        100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(tmp_path), max_bytes=1000
    )
    made.start()
    with caplog.at_level(logging.ERROR):
        for n in range(20):
            made.add(event(n))
    dropped = made.stats()["events_dropped"]
    assert 0 < dropped < 20 and "dropped" in caplog.text
    assert made._journal is not None and made._journal.size <= 1000
    killed(made)


def test_under_steady_traffic_the_journal_is_compacted(
    demo_gateway: LocalGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never drained (events keep coming while batches go out), the journal is still kept to
    what is left to send: its generations replace each other, and every event arrives once."""
    monkeypatch.setattr(events_module, "COMPACT_AT", 4000)
    made = spool(demo_gateway.url, tmp_path, batch_size=20)
    demo_gateway.reset_records()
    for n in range(1000):
        made.add(event(n))
        if n % 50 == 0:
            wait_until(lambda: made.stats()["events_queued"] < 40, what="sending keeps up")
    assert made.flush(10.0)
    (path,) = journals(tmp_path)
    generation = int(path.stem.rpartition("-")[2])
    assert generation > 5, f"compacted {generation} times"
    assert path.stat().st_size < 3 * 4000 + 2000
    log = demo_gateway.records()["event_log"]
    assert sorted(int(e["body"]["d"]["msgId"][1:]) for e in log) == list(range(1000))
    made.close(1.0)
    assert journals(tmp_path) == []


def test_a_kill_during_compaction_sends_each_event_once(tmp_path: Path) -> None:
    """Killed between writing the next generation and removing the old: both are on disk,
    and the recovery merges them by event number."""

    def line(n: int) -> bytes:
        return (
            b'{"s":%d,"q":{"en":"vwo_variationShown","a":"123456","env":"k"},"d":{"d":{"msgId":"m%d"}}}\n'
            % (n, n)
        )

    old = b"".join(line(n) for n in range(1, 6)) + b'{"f":[1,2]}\n{"a":2}\n'
    (tmp_path / f"events-{OWNER.tag}-9-dead-0.jsonl").write_bytes(old)
    (tmp_path / f"events-{OWNER.tag}-9-dead-1.jsonl").write_bytes(
        b"".join(line(n) for n in range(3, 7))
    )
    made = EventSpool(100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(tmp_path))
    made.start()
    assert made.stats()["events_recovered"] == 4, "3, 4, 5 and 6, each once"
    assert made.stats()["events_maybe_resent"] == 0
    assert [e.body["d"]["msgId"] for e in made._spool] == ["m3", "m4", "m5", "m6"]
    assert [p.name for p in journals(tmp_path)] == [made._journal.path.name]  # type: ignore[union-attr]
    killed(made)


def test_a_process_that_cannot_journal_leaves_orphans_to_one_that_can(tmp_path: Path) -> None:
    made = EventSpool(100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(tmp_path))
    made.start()
    assert made._journal is not None
    made._journal.broken = True  # as after a failed write: memory only from then on
    dead = tmp_path / f"events-{OWNER.tag}-3-dead-0.jsonl"
    dead.write_bytes(
        b'{"s":1,"q":{"en":"vwo_variationShown","a":"123456","env":"k"},"d":{"d":{"msgId":"m1"}}}\n'
    )
    made._adopt_orphans()
    assert made.stats()["events_recovered"] == 0 and dead.exists(), "not taken into memory"
    killed(made)
    able = EventSpool(100, "http://127.0.0.1:9", owner=OWNER, state_dir=str(tmp_path))
    able.start()
    assert able.stats()["events_recovered"] == 1 and not dead.exists()
    killed(able)


def test_a_send_that_outlasts_close_leaves_the_closed_journal_alone(
    demo_gateway: LocalGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    demo_gateway.faults.set("batch_events", latency=1.5)
    made = spool(demo_gateway.url, tmp_path)
    for n in range(3):
        made.add(event(n))
    wait_until(lambda: made.stats()["events_queued"] == 3 and made._in_flight == 3)
    with caplog.at_level(logging.WARNING):
        made.close(0.1)  # the batch is still on its way
        (path,) = journals(tmp_path)
        kept = path.read_bytes()
        thread = made._thread
        assert thread is not None
        thread.join(5.0)  # the send ends after close: its answer must not touch the journal
    assert not thread.is_alive()
    assert demo_gateway.records()["events"]["vwo_variationShown"] == 3
    assert path.read_bytes() == kept and b'{"a":' not in kept
    assert "journal" not in caplog.text.replace("kept in", "")  # no write failure logged
