"""The state directory and Redis as an attacker or a careless operator leaves them: the settings
thread never dies, another account's state is never taken, two adopters never send an event
twice uncounted, and no planted file is written through, blocks, or is read whole."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support import EngineFactory, RedisServer, visitor, wait_until
from vwo_heap_middleware.decision import Reason
from vwo_heap_middleware.evaluation.outcome import Event
from vwo_heap_middleware.gateway.events import EventSpool
from vwo_heap_middleware.state.files import MAX_EVENT_LINE, MAX_SETTINGS_BYTES, Owner
from vwo_heap_middleware.state.files import OPEN_TO_OTHERS as OPEN_TO_OTHERS_LOG
from vwo_heap_middleware.state.journal import Journal
from vwo_heap_middleware.state.kept_settings import settings_file
from vwo_heap_middleware.testing.gateway import LocalGateway

FLAGS = ("premium_checkout", "new_banner")
OWNER = Owner("123456", "k")
SHOWN = "vwo_variationShown"


def demo_owner(gateway: LocalGateway) -> Owner:
    """The owner ``make_engine`` gives an engine on ``gateway``."""
    settings = json.loads(gateway.app.settings_body)
    return Owner(str(settings["accountId"]), settings.get("sdkKey", "any-key"))


def future(path: Path) -> None:
    document = json.loads(path.read_text())
    document["kept_at"] = time.time() + 10 * 365 * 86400
    path.write_text(json.dumps(document))


def replaced(text: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        document = json.loads(path.read_text())
        text_ = text.replace("OWNER", document["owner"])
        path.write_text(text_.replace("SETTINGS", json.dumps(document["settings"])))

    return damage


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def huge(path: Path) -> None:
    with path.open("ab") as file:  # sparse: larger than the bound without writing it
        file.truncate(MAX_SETTINGS_BYTES + 1)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_text("[" * 200_000),
        replaced('{"owner": "OWNER", "kept_at": ' + "9" * 401 + ', "settings": SETTINGS}'),
        replaced('{"owner": "OWNER", "kept_at": Infinity, "settings": SETTINGS}'),
        future,
        fifo,
        dev_zero,
        huge,
    ],
    ids=["recursion", "overflow", "infinite", "future", "fifo", "dev-zero", "too-large"],
)
def test_a_hostile_settings_file_never_stops_the_settings_thread(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
) -> None:
    """Issue: these killed the settings thread (the process was never ready, even once the
    gateway answered), blocked it for ever, or let settings look young for ever."""
    engine = make_engine(demo_gateway, state_dir=str(tmp_path))
    engine.close()
    damage(settings_file(str(tmp_path), demo_owner(demo_gateway)))
    demo_gateway.refuse_connections()
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        engine = make_engine(demo_gateway, ready=False, state_dir=str(tmp_path))
        assert engine.wait_started(5.0) is False, "the kept settings were not used"
    assert "kept VWO settings" in caplog.text
    assert engine.readiness()["kept_settings_error"]
    demo_gateway.accept_connections()
    wait_until(lambda: engine.ready, what="settings from the gateway once it is back")
    assert engine.readiness()["settings_source"] == "gateway"


def test_a_hostile_bootstrap_file_is_skipped(
    demo_gateway: LocalGateway, make_engine: EngineFactory, tmp_path: Path
) -> None:
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text("[" * 200_000)
    demo_gateway.refuse_connections()
    engine = make_engine(demo_gateway, ready=False, bootstrap_settings=str(bootstrap))
    assert engine.wait_started(5.0) is False
    assert "RecursionError" in str(engine.readiness()["kept_settings_error"])
    demo_gateway.accept_connections()
    wait_until(lambda: engine.ready, what="settings from the gateway once it is back")


def test_a_hostile_redis_settings_document_never_stops_the_fleet(
    demo_gateway: LocalGateway, make_engine: EngineFactory, redis_server: RedisServer
) -> None:
    """The settings key holds junk while another worker holds the fetch lock: this worker
    asks the gateway itself (issue: its settings thread died, and so did every new worker's)."""
    owner = demo_owner(demo_gateway)
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"vwo-heap:{owner.account_id}:settings", "[" * 5000)
    client.set(f"vwo-heap:{owner.account_id}:settings:lock", "1", ex=600)
    engine = make_engine(demo_gateway, redis_url=redis_server.url)
    assert engine.readiness()["settings_source"] == "gateway"
    assert demo_gateway.records()["requests"]["settings"] == 1


def test_kept_settings_of_another_account_are_refused(
    demo_gateway: LocalGateway, make_engine: EngineFactory, tmp_path: Path
) -> None:
    """App B on app A's state directory, its gateway down: it does not decide from A's."""
    make_engine(demo_gateway, state_dir=str(tmp_path)).close()
    mine = settings_file(str(tmp_path), demo_owner(demo_gateway))
    other = settings_file(str(tmp_path), Owner("999", "other-key"))
    mine.rename(other)  # A's settings, under B's name: the document still says A
    demo_gateway.refuse_connections()
    engine = make_engine(
        demo_gateway, ready=False, state_dir=str(tmp_path), account_id="999", sdk_key="other-key"
    )
    assert engine.wait_started(5.0) is False
    assert "another VWO account or SDK key" in str(engine.readiness()["kept_settings_error"])


def event(n: int, owner: Owner = OWNER, key: str | None = None) -> Event:
    props = {"id": 1, "variation": "1"}
    body = {"d": {"msgId": f"m{n}", "visId": f"V{n}", "event": {"name": SHOWN, "props": props}}}
    return Event.of(body, {"en": SHOWN, "a": owner.account_id, "env": key or owner.sdk_key})


def dead_journal(directory: Path, owner: Owner, family: str, events: list[Event]) -> Path:
    """A journal a killed process of ``owner`` left (``family``: ``<pid>-<hex>``)."""
    path = directory / f"events-{owner.tag}-{family}-0.jsonl"
    lines = [b'{"s":%d' % (n + 1) + spool_entry(e) for n, e in enumerate(events)]
    path.write_bytes(b"".join(lines))
    return path


def spool_entry(event: Event) -> bytes:
    return Journal.entry(event)


def test_a_journal_of_another_account_is_left_alone(
    demo_gateway: LocalGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = Owner("777", "their-key")
    left = dead_journal(tmp_path, theirs, "1-dead", [event(n, theirs) for n in range(5)])
    with caplog.at_level(logging.WARNING):
        made = EventSpool(100, demo_gateway.url, state_dir=str(tmp_path), owner=OWNER)
        made.start()
    assert made.stats()["events_recovered"] == 0 and left.exists()
    assert "not this app's impression journals" in caplog.text
    made.close(0.0)


def test_events_of_another_owner_inside_our_journal_are_refused(
    demo_gateway: LocalGateway, tmp_path: Path
) -> None:
    mixed = [event(1), event(2, Owner("777", "their-key")), event(3)]
    dead_journal(tmp_path, OWNER, "1-dead", mixed)
    made = EventSpool(100, demo_gateway.url, state_dir=str(tmp_path), owner=OWNER)
    made.start()
    assert [e.body["d"]["msgId"] for e in made._spool] == ["m1", "m3"]
    made.close(5.0)
    assert demo_gateway.records()["events"][SHOWN] == 2


def test_each_batch_goes_with_its_own_events_account_and_key(demo_gateway: LocalGateway) -> None:
    made = EventSpool(100, demo_gateway.url, linger=0.01)
    a, b = Owner("123456", "local-demo-sdk-key"), Owner("654321", "b-key")
    for n in range(6):
        made.add(event(n, a if n % 2 else b))
    assert made.flush(5.0)
    log = demo_gateway.records()["event_log"]
    sent = [(e["query"]["a"], e["query"]["env"], e["body"]["d"]["msgId"]) for e in log]
    assert sorted(sent) == sorted(
        (o.account_id, o.sdk_key, f"m{n}") for n, o in enumerate([b, a] * 3)
    ), "each event with its own account and key"
    made.close(1.0)


def test_an_unsendable_event_is_dropped_alone(demo_gateway: LocalGateway) -> None:
    """A key with CR/LF cannot be a header: issue: its whole batch (up to 500) was dropped."""
    made = EventSpool(100, demo_gateway.url, linger=0.05)
    made.add(event(1))
    made.add(event(2, key="k\r\nX-Injected: 1"))
    made.add(event(3))
    assert made.flush(5.0)
    assert made.stats()["events_dropped"] == 1 and made.stats()["events_sent"] == 2
    made.close(1.0)


def test_two_processes_adopting_at_once_send_each_event_once(
    demo_gateway: LocalGateway, tmp_path: Path
) -> None:
    """Issue: one adopter could unlink an orphan between the other's open and lock; the other
    then locked the unlinked file and sent it again, uncounted."""
    for round_ in range(10):
        directory = tmp_path / str(round_)
        directory.mkdir()
        for n in range(20):
            dead_journal(directory, OWNER, f"{n + 1}-dead", [event(n)])
        spools = [
            EventSpool(10_000, "http://127.0.0.1:9", state_dir=str(directory), owner=OWNER)
            for _ in range(2)
        ]
        start = threading.Barrier(2)
        threads = [threading.Thread(target=adopt, args=(s, start)) for s in spools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        taken = sorted(e.body["d"]["msgId"] for s in spools for e in s._spool)
        assert taken == sorted(f"m{n}" for n in range(20)), f"round {round_}"
        for spool in spools:
            spool.close(0.0)


def adopt(spool: EventSpool, start: threading.Barrier) -> None:
    start.wait()
    spool.start()


def test_a_planted_symlink_is_never_written_through(tmp_path: Path) -> None:
    """Compaction's next generation is a predictable name: a symlink planted there must not
    make the journal append (with the SDK key) to the file it points at."""
    outside = tmp_path / "outside.txt"
    outside.write_text("")
    state = tmp_path / "state"
    made = EventSpool(100, "http://127.0.0.1:9", state_dir=str(state), owner=OWNER)
    made.start()
    journal = made._journal
    assert journal is not None
    (state / f"events-{journal.family}-1.jsonl").symlink_to(outside)
    assert journal.next() is None
    assert outside.read_text() == ""
    made.close(0.0)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_a_journal_name_that_is_not_a_file_neither_blocks_nor_is_read(
    tmp_path: Path, kind: str
) -> None:
    planted = tmp_path / f"events-{OWNER.tag}-1-dead-0.jsonl"
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "dev-zero":
        planted.symlink_to("/dev/zero")
    else:
        planted.mkdir()
    started = time.monotonic()
    made = EventSpool(100, "http://127.0.0.1:9", state_dir=str(tmp_path), owner=OWNER)
    made.start()
    assert time.monotonic() - started < 5.0
    assert made.stats()["events_recovered"] == 0
    made.close(0.0)


def test_a_forged_huge_journal_line_is_not_read_whole(tmp_path: Path) -> None:
    good = spool_entry(event(1))
    forged = b'{"s":2,"q":{},"d":{"x":"' + b"a" * (MAX_EVENT_LINE + 10) + b'"}}\n'
    (tmp_path / f"events-{OWNER.tag}-1-dead-0.jsonl").write_bytes(
        b'{"s":1' + good + forged + b'{"s":3' + spool_entry(event(3))
    )
    made = EventSpool(100, "http://127.0.0.1:9", state_dir=str(tmp_path), owner=OWNER)
    made.start()
    assert [e.body["d"]["msgId"] for e in made._spool] == ["m1", "m3"]
    made.close(0.0)


def test_a_state_dir_open_to_others_is_said_once(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        engine = make_engine(demo_gateway, state_dir=str(state))
        decided = engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)
        assert decided["premium_checkout"].reason is Reason.TARGETED, "served all the same"
        engine.close()
    said = [r for r in caplog.records if r.msg == OPEN_TO_OTHERS_LOG]
    assert len(said) == 1 and "writable by others" in said[0].getMessage()
