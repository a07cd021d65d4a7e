"""Last-known-good settings: a process that starts while the gateway is down decides from the
newest kept revision (state dir, Redis, bootstrap file) on its first request, says so in
readiness, never uses settings older than the configured age, and survives bad files.
With Redis, one worker fetches settings for the fleet."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.support import EngineFactory, RedisServer, gateway_env, visitor, wait_until
from vwo_heap_middleware.decision import Reason
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.testing.gateway import LocalGateway

FLAGS = ("premium_checkout", "new_banner")


def kept_file(state_dir: Path) -> Path:
    """The one settings file an engine kept in ``state_dir``."""
    (path,) = state_dir.glob("settings-*.json")
    return path


def loaded_once(make_engine: EngineFactory, gateway: LocalGateway, **options: object) -> str:
    """Start an engine that loads settings from the gateway (so they are kept), close it;
    returns the revision it loaded."""
    engine = make_engine(gateway, **options)
    readiness = engine.readiness()
    assert readiness["settings_source"] == "gateway"
    engine.close()
    return str(readiness["revision"])


def cold_start(make_engine: EngineFactory, gateway: LocalGateway, **options: object) -> FlagEngine:
    """An engine started while ``gateway`` refuses connections; returns once it answered.
    (Its impressions cannot be sent: closing waits little for them.)"""
    engine = make_engine(gateway, ready=False, flush_timeout=0.2, **options)
    assert engine.wait_ready(5.0)
    return engine


def test_a_cold_start_during_an_outage_decides_from_the_state_dir(
    demo_gateway: LocalGateway, make_engine: EngineFactory, tmp_path: Path
) -> None:
    revision = loaded_once(make_engine, demo_gateway, state_dir=str(tmp_path))
    assert json.loads((kept_file(tmp_path)).read_text())["settings"]
    demo_gateway.refuse_connections()
    engine = cold_start(make_engine, demo_gateway, state_dir=str(tmp_path))
    banner = engine.decide(visitor(engine.config, "bob@example.com"), FLAGS)["new_banner"]
    assert banner.enabled and banner.reason is Reason.TARGETED
    readiness = engine.readiness()
    assert readiness["ready"] and readiness["revision"] == revision
    assert readiness["settings_source"] == "state_dir"
    assert 0 <= readiness["settings_age"] < 60
    assert readiness["last_error"]  # and it keeps trying the gateway
    demo_gateway.accept_connections()
    wait_until(lambda: engine.readiness()["settings_source"] == "gateway", timeout=10)


def test_without_kept_settings_a_cold_start_is_not_ready(
    demo_gateway: LocalGateway, make_engine: EngineFactory, tmp_path: Path
) -> None:
    demo_gateway.refuse_connections()
    engine = make_engine(demo_gateway, ready=False, state_dir=str(tmp_path))
    assert not engine.wait_ready(1.0)
    decision = engine.decide(visitor(engine.config, "bob@example.com"), FLAGS)["new_banner"]
    assert decision.reason is Reason.NOT_READY and not decision.enabled
    assert engine.readiness()["settings_source"] is None


def test_the_bootstrap_file_is_the_floor(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = tmp_path / "exported.json"
    bootstrap.write_bytes(demo_gateway.app.settings_body)
    demo_gateway.refuse_connections()
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        engine = cold_start(make_engine, demo_gateway, bootstrap_settings=str(bootstrap))
    assert engine.decide(visitor(engine.config, "bob@example.com"), FLAGS)["new_banner"].enabled
    assert engine.readiness()["settings_source"] == "bootstrap"
    assert "started from the VWO settings kept in bootstrap" in caplog.text


def test_the_newest_kept_revision_wins_over_the_bootstrap_file(
    demo_gateway: LocalGateway, make_engine: EngineFactory, tmp_path: Path
) -> None:
    bootstrap = tmp_path / "exported.json"
    bootstrap.write_bytes(demo_gateway.app.settings_body)
    old = time.time() - 3600
    os.utime(bootstrap, (old, old))
    state = tmp_path / "state"
    loaded_once(make_engine, demo_gateway, state_dir=str(state))
    demo_gateway.refuse_connections()
    engine = cold_start(
        make_engine, demo_gateway, state_dir=str(state), bootstrap_settings=str(bootstrap)
    )
    assert engine.readiness()["settings_source"] == "state_dir"


def test_settings_older_than_the_limit_are_not_used(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded_once(make_engine, demo_gateway, state_dir=str(tmp_path))
    kept = kept_file(tmp_path)
    document = json.loads(kept.read_text())
    document["kept_at"] -= 3 * 86400
    kept.write_text(json.dumps(document))
    demo_gateway.refuse_connections()
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        engine = make_engine(
            demo_gateway, ready=False, state_dir=str(tmp_path), kept_settings_max_age=86400.0
        )
        assert not engine.wait_ready(1.0)
    assert "older than 86400 s: not used" in caplog.text


def holds(kept: Path, settings: bytes) -> bool:
    try:
        return bool(json.loads(kept.read_text())["settings"] == json.loads(settings))
    except ValueError:
        return False  # still the damaged one


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "\x00\xff garbage",
        lambda text: json.dumps({"kept_at": "yesterday", "settings": {}}),
        lambda text: json.dumps({"kept_at": time.time(), "settings": {"features": "nope"}}),
    ],
    ids=["truncated", "garbage", "bad-date", "refused-by-the-sdk"],
)
def test_a_damaged_settings_file_is_said_and_the_process_serves(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: object,
) -> None:
    loaded_once(make_engine, demo_gateway, state_dir=str(tmp_path))
    kept = kept_file(tmp_path)
    kept.write_text(damage(kept.read_text()))  # type: ignore[operator]
    demo_gateway.refuse_connections()
    with caplog.at_level(logging.WARNING, logger="vwo_heap_middleware"):
        engine = make_engine(demo_gateway, ready=False, state_dir=str(tmp_path))
        assert not engine.wait_ready(1.0)
        decision = engine.decide(visitor(engine.config, "bob@example.com"), FLAGS)
    assert decision["new_banner"].reason is Reason.NOT_READY
    assert "kept VWO settings" in caplog.text
    demo_gateway.accept_connections()
    wait_until(lambda: engine.ready, what="settings from the gateway once it is back")
    assert engine.readiness()["settings_source"] == "gateway"
    back = functools.partial(holds, kept, demo_gateway.app.settings_body)
    wait_until(back, what="the gateway's settings kept")


def test_a_state_dir_that_cannot_be_written_is_said_and_the_process_serves(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # (as root, file modes would not stop a write)
    with caplog.at_level(logging.ERROR, logger="vwo_heap_middleware"):
        engine = make_engine(demo_gateway, state_dir=str(blocker / "state"))
        decision = engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)
        engine.close()
    assert decision["premium_checkout"].enabled
    assert "cannot keep the VWO settings" in caplog.text
    assert "cannot journal impressions" in caplog.text


def test_with_redis_a_new_host_starts_from_the_fleets_settings(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    redis_server: RedisServer,
) -> None:
    loaded_once(make_engine, demo_gateway, redis_url=redis_server.url)
    demo_gateway.refuse_connections()
    engine = cold_start(make_engine, demo_gateway, redis_url=redis_server.url)
    assert engine.decide(visitor(engine.config, "bob@example.com"), FLAGS)["new_banner"].enabled
    assert engine.readiness()["settings_source"] == "redis"


def test_with_redis_one_worker_fetches_settings_for_the_fleet(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    redis_server: RedisServer,
) -> None:
    options = {"redis_url": redis_server.url, "settings_refresh_interval": 60.0}
    first = make_engine(demo_gateway, **options)
    assert first.readiness()["settings_source"] == "gateway"
    fleet = [make_engine(demo_gateway, **options) for _ in range(3)]
    assert {engine.readiness()["settings_source"] for engine in fleet} == {"redis"}
    assert {engine.readiness()["revision"] for engine in fleet} == {first.readiness()["revision"]}
    assert demo_gateway.records()["requests"]["settings"] == 1


def test_redis_down_each_worker_fetches_for_itself(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    engines = [make_engine(demo_gateway, redis_url=redis_server.url) for _ in range(2)]
    assert {engine.readiness()["settings_source"] for engine in engines} == {"gateway"}
    assert demo_gateway.records()["requests"]["settings"] == 2


def aged(redis_server: RedisServer) -> int:
    """Make every membership answer kept in Redis stale (its fresh time over), as after the
    membership TTL passed; returns how many."""
    client = redis.Redis.from_url(redis_server.url)
    names = [name for name in client.scan_iter("*:m:*") if not name.endswith(b":lock")]
    for name in names:
        value, _ = json.loads(client.get(name) or b"null")
        client.set(name, json.dumps([value, time.time() - 1]), keepttl=True)
    return len(names)


@pytest.mark.parametrize("on_loop", [False, True], ids=["blocking", "event-loop"])
def test_with_redis_a_restarted_worker_keeps_memberships_marked_stale(
    demo_gateway: LocalGateway,
    make_engine: EngineFactory,
    redis_server: RedisServer,
    tmp_path: Path,
    on_loop: bool,
) -> None:
    options = {"redis_url": redis_server.url, "state_dir": str(tmp_path)}
    before = make_engine(demo_gateway, **options)
    ada = visitor(before.config, "ada@example.com")
    assert before.decide(ada, FLAGS)["premium_checkout"].enabled
    before.close()
    assert aged(redis_server) == 1
    demo_gateway.refuse_connections()
    after = cold_start(make_engine, demo_gateway, **options)
    decided = asyncio.run(after.decide_async(ada, FLAGS)) if on_loop else after.decide(ada, FLAGS)
    premium = decided["premium_checkout"]
    assert premium.enabled and premium.stale and premium.reason is Reason.TARGETED
    nobody_knew = after.decide(visitor(after.config, "bob@example.com"), FLAGS)
    assert nobody_knew["premium_checkout"].reason is Reason.GATEWAY_ERROR


def test_vwo_heap_settings_raw_exports_a_bootstrap_file(
    demo_gateway: LocalGateway, make_engine: EngineFactory, tmp_path: Path
) -> None:
    exported = subprocess.run(
        [sys.executable, "-m", "vwo_heap_middleware", "settings", "--raw"],
        env=gateway_env(demo_gateway),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    bootstrap = tmp_path / "settings.json"
    bootstrap.write_bytes(exported)
    demo_gateway.refuse_connections()
    engine = cold_start(make_engine, demo_gateway, bootstrap_settings=str(bootstrap))
    assert engine.readiness()["settings_source"] == "bootstrap"
    assert engine.decide(visitor(engine.config, "bob@example.com"), FLAGS)["new_banner"].enabled
