"""FlagEngine against the real VWO SDK and the local gateway over HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.support import (
    DATA,
    DEMO_FLAGS,
    ROOT,
    EngineFactory,
    run_counting_ticks,
    visitor,
    wait_until,
)
from vwo_heap_middleware.config import Config, FlagDefault
from vwo_heap_middleware.decider import SETTINGS_LOADED, UNKNOWN_FLAGS
from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.engine import ENGINE_FAILED, FlagEngine
from vwo_heap_middleware.gateway.settings_loop import MAX_RETRY_DELAY
from vwo_heap_middleware.identity import HeapIdentity, short_hash
from vwo_heap_middleware.observers import DECIDED
from vwo_heap_middleware.testing.gateway import LocalGateway, load_flags_file
from vwo_heap_middleware.visitor import Visitor
from vwo_heap_middleware.vwo_sdk import SettingsRejected

FLAGS = ("premium_checkout", "new_banner")
PREMIUM = {"tier_label": "Premium", "discount_pct": 15}
BANNER = {"text": "Welcome back!", "color": "#0a7d4f"}


def test_member_gets_the_flag_and_its_variables(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    decisions = engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)
    assert decisions["premium_checkout"] == FlagDecision(
        "premium_checkout", True, PREMIUM, Reason.TARGETED, evaluator="native"
    )
    assert decisions["new_banner"].to_dict() == {
        "enabled": True,
        "variables": BANNER,
        "reason": "targeted",
    }
    lookups = demo_gateway.records()["membership_lookups"]
    assert lookups == [
        {
            "list_id": "heap_premium_users",
            "attribute": "ada@example.com",
            "member": True,
            "known_list": True,
        }
    ]


def test_non_member_and_anonymous_visitors_do_not(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    other = engine.decide(visitor(engine.config, "ADA@example.com"), FLAGS)
    assert other["premium_checkout"] == FlagDecision(
        "premium_checkout", False, {}, Reason.NOT_TARGETED, evaluator="native"
    )
    assert other["new_banner"].enabled
    nobody = engine.decide(visitor(engine.config), FLAGS)
    assert {k: d.reason for k, d in nobody.items()} == {k: Reason.NO_USER for k in FLAGS}
    assert not any(d.enabled for d in nobody.values())


def test_heap_user_id_alone_gets_everyone_rollouts(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    cookie = "_hp5_meta.1=" + json.dumps({"userId": "0042"}).replace('"', "%22")
    decisions = engine.decide(visitor(engine.config, cookie=cookie), FLAGS)
    assert decisions["new_banner"].reason is Reason.TARGETED
    assert decisions["premium_checkout"].reason is Reason.NOT_TARGETED
    assert demo_gateway.records()["membership_lookups"] == [], "no identity, no lookup"


def test_unknown_flag_and_configured_defaults(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, flag_defaults={"nope": FlagDefault(True, {"x": 1})})
    decision = engine.decide(visitor(engine.config, "ada@example.com"), ["nope"])["nope"]
    assert decision == FlagDecision("nope", True, {"x": 1}, Reason.UNKNOWN_FLAG)
    assert decision.variable("x") == 1 and decision.variable("y", "d") == "d"


def test_ab_variation_is_stable_per_user(make_engine: EngineFactory) -> None:
    with LocalGateway.from_files(flags_file=DATA / "flags_all_rules.toml") as gateway:
        engine = make_engine(gateway, decision_ttl=0)
        users = [f"user-{n}" for n in range(40)]
        first = [
            engine.decide(visitor(engine.config, u), ["ab"])["ab"].variables["color"] for u in users
        ]
        again = [
            engine.decide(visitor(engine.config, u), ["ab"])["ab"].variables["color"] for u in users
        ]
    assert first == again
    assert set(first) == {"grey", "green"}


def test_gateway_down_at_start_then_back(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    demo_gateway.refuse_connections()
    engine = make_engine(demo_gateway, ready=False)
    assert not engine.wait_started(), "the first attempt was refused"
    started = time.monotonic()
    decisions = engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)
    assert time.monotonic() - started < 0.5
    assert {d.reason for d in decisions.values()} == {Reason.NOT_READY}
    assert not engine.ready
    demo_gateway.accept_connections()
    # On the engine's readiness, not on the clock: its retries back off up to MAX_RETRY_DELAY.
    assert engine.wait_ready(MAX_RETRY_DELAY + 5.0), "settings after the gateway returns"
    decisions = engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)
    assert decisions["premium_checkout"].reason is Reason.TARGETED


def test_slow_gateway_request_returns_within_the_budget(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, evaluation_timeout=0.2, lookup_timeout=5.0)
    demo_gateway.faults.set("check_attribute", latency=3.0)
    started = time.monotonic()
    decisions = engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)
    assert time.monotonic() - started < 1.0
    assert decisions["premium_checkout"] == FlagDecision(
        "premium_checkout", False, {}, Reason.TIMEOUT
    )
    assert decisions["new_banner"].reason is Reason.TARGETED, "flags without segments still decide"


def test_failing_gateway_opens_the_circuit_and_nobody_waits(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, evaluation_timeout=1.0)
    demo_gateway.faults.set("check_attribute", status=500)
    for n in range(10):  # the breaker's minimum of calls in its window
        decision = engine.decide(
            visitor(engine.config, f"user{n}@example.com"), ["premium_checkout"]
        )
        assert decision["premium_checkout"].reason is Reason.GATEWAY_ERROR
    assert engine.readiness()["gateway_circuit_open"]
    demo_gateway.faults.set("check_attribute", latency=5.0)
    calls = engine.stats()["membership_calls"]
    started = time.monotonic()
    decision = engine.decide(visitor(engine.config, "new@example.com"), ["premium_checkout"])
    assert time.monotonic() - started < 0.5, "an open circuit answers without waiting"
    assert decision["premium_checkout"].reason is Reason.GATEWAY_ERROR
    assert engine.stats()["membership_calls"] == calls


def test_open_circuit_serves_stale_answers(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, membership_ttl=0, decision_ttl=0)
    assert engine.decide(visitor(engine.config, "ada@example.com"), ["premium_checkout"])[
        "premium_checkout"
    ].enabled
    demo_gateway.faults.set("check_attribute", status=503)
    for n in range(10):
        engine.decide(visitor(engine.config, f"x{n}@example.com"), ["premium_checkout"])
    assert engine.readiness()["gateway_circuit_open"]
    decision = engine.decide(visitor(engine.config, "ada@example.com"), ["premium_checkout"])
    assert decision["premium_checkout"].reason is Reason.TARGETED, (
        "a stale member answer still counts"
    )


def test_one_identity_many_requests_one_lookup(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, evaluation_timeout=2.0, lookup_timeout=1.0)
    demo_gateway.faults.set("check_attribute", latency=0.2)  # keeps the first lookup in flight
    barrier = threading.Barrier(16)
    results: list[FlagDecision] = []

    def request() -> None:
        barrier.wait()
        results.append(
            engine.decide(visitor(engine.config, "grace@example.com"), FLAGS)["premium_checkout"]
        )

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(20):
        engine.decide(visitor(engine.config, "grace@example.com"), FLAGS)
    assert len(demo_gateway.records()["membership_lookups"]) == 1
    assert [d.reason for d in results] == [Reason.TARGETED] * 16


def test_sixteen_threads_mixed_users_no_wrong_decision(
    raw_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(raw_gateway, decision_ttl=0, evaluation_timeout=5.0, lookup_timeout=5.0)
    members = {"Zoë@example.com", "ZOË@example.com"}
    people = [
        ("Zoë@example.com", "198.51.100.4"),
        ("zoë@example.com", "192.0.2.1"),
        ("ZOË@example.com", "192.0.2.8"),
        ("someone@example.com", "198.51.100.9"),
    ]
    wrong: list[tuple[str, str, dict[str, Any]]] = []
    barrier = threading.Barrier(16)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(60):
            identity, ip = people[(n + i) % len(people)]
            got = engine.decide(
                visitor(engine.config, identity, peer=ip, user_agent="UA"),
                ["vip_segment", "berlin_only"],
            )
            expected = {
                "vip_segment": identity in members,
                "berlin_only": ip.startswith("198.51.100."),
            }
            actual = {key: got[key].enabled for key in expected}
            if actual != expected or (
                got["berlin_only"].enabled and got["berlin_only"].variables != {"city": "Berlin"}
            ):
                wrong.append((identity, ip, actual))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unsafe SDK call shows here
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
    assert raw_gateway.records()["requests"].get("user_details", 0) <= 4, "user details are cached"


def test_settings_change_gives_new_decisions(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, settings_refresh_interval=1.0)
    bob = visitor(engine.config, "bob@example.com")
    assert not engine.decide(bob, ["premium_checkout"])["premium_checkout"].enabled
    settings = load_flags_file(DEMO_FLAGS)
    settings["campaigns"][0]["variations"][0]["segments"] = {}  # premium for everyone
    revision = engine.readiness()["revision"]
    demo_gateway.set_settings(settings)
    wait_until(
        lambda: engine.readiness()["revision"] != revision, timeout=5.0, what="the new revision"
    )
    assert engine.decide(bob, ["premium_checkout"])["premium_checkout"].enabled


def test_decisions_are_cached_per_user(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    for _ in range(5):
        engine.decide(visitor(engine.config, "ada@example.com", user_agent="UA"), FLAGS)
    engine.flush_events()
    assert demo_gateway.records()["events"].get("vwo_variationShown") == 2
    assert engine.stats()["cached_decisions"] == 2


def test_impressions_reach_the_gateway(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    engine.decide(
        visitor(engine.config, "ada@example.com", user_agent="Mozilla/5.0", peer="192.0.2.1"), FLAGS
    )
    assert engine.flush_events()
    shown = [e for e in demo_gateway.records()["event_log"] if e["name"] == "vwo_variationShown"]
    assert len(shown) == 2
    assert all(e["body"]["d"]["visitor_ua"] == "Mozilla/5.0" for e in shown)


def test_async_decisions_do_not_block_the_loop(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, evaluation_timeout=2.0, lookup_timeout=1.0)
    demo_gateway.faults.set("check_attribute", latency=0.3)

    people = ["ada@example.com", "grace@example.com", "bob@example.com"]
    results, ticks = run_counting_ticks(
        lambda: asyncio.gather(
            *(engine.decide_async(visitor(engine.config, p), FLAGS) for p in people)
        )
    )
    assert [r["premium_checkout"].enabled for r in results] == [True, True, False]
    assert ticks >= 10, "the event loop kept running while lookups waited"


def test_several_engines_share_the_process_sdk(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    with LocalGateway.from_files(flags_file=DATA / "flags_all_rules.toml") as other_gateway:
        other_gateway.set_segments({"vip_list": ["ada@example.com"]})
        demo, other = make_engine(demo_gateway), make_engine(other_gateway)
        ada = visitor(demo.config, "ada@example.com")
        for _ in range(3):  # each call sets the SDK up for its own engine again
            assert demo.decide(ada, ["premium_checkout"])["premium_checkout"].enabled
            assert other.decide(ada, ["segment_only"])["segment_only"].variables == {"tier": "vip"}
            assert other.decide(ada, ["premium_checkout"])["premium_checkout"].reason is (
                Reason.UNKNOWN_FLAG
            )
            for engine in (demo, other):  # and a closed engine starts again
                engine.close()
                engine.start()
                assert engine.wait_ready(5)
    assert demo.flush_events() and other.flush_events()
    assert demo_gateway.records()["events"]["vwo_variationShown"] == 1, "decided once, cached"
    assert other_gateway.records()["events"]["vwo_variationShown"] == 1, "its own impressions"


def test_a_closed_engine_is_not_ready_until_started_again(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    engine.close()
    assert not engine.ready
    ada = visitor(engine.config, "ada@example.com")
    assert engine.decide(ada, FLAGS)["new_banner"].reason is Reason.NOT_READY
    engine.start()
    assert engine.wait_ready(5)
    assert engine.decide(ada, FLAGS)["premium_checkout"].reason is Reason.TARGETED
    assert any(t.name == "vwo-heap-settings" for t in threading.enumerate()), "refreshing again"


def test_settings_loads_are_logged(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="vwo_heap_middleware"):
        engine = make_engine(demo_gateway)
    assert SETTINGS_LOADED % (engine.readiness()["revision"], 2) in caplog.text


def test_an_unexpected_failure_gives_defaults_not_an_exception(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(demo_gateway, flag_defaults={"new_banner": FlagDefault(True)})
    broken = Visitor(HeapIdentity(), "someone", {"id": "someone"})  # no custom_variables
    decisions = engine.decide(broken, FLAGS)
    assert {k: (d.enabled, d.reason) for k, d in decisions.items()} == {
        "premium_checkout": (False, Reason.ERROR),
        "new_banner": (True, Reason.ERROR),
    }
    assert asyncio.run(engine.decide_async(broken, FLAGS)) == decisions
    assert caplog.text.count(ENGINE_FAILED) == 2


def test_each_decision_is_logged_at_debug_with_extras(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(demo_gateway)
    with caplog.at_level("DEBUG", logger="vwo_heap_middleware"):
        engine.decide(visitor(engine.config, "ada@example.com"), ["premium_checkout"])
    decided = [r for r in caplog.records if r.msg == DECIDED]
    assert [(r.flag_key, r.flag_reason) for r in decided] == [("premium_checkout", "targeted")]  # type: ignore[attr-defined]
    assert decided[0].getMessage() == DECIDED % (
        "premium_checkout",
        "targeted",
        short_hash("ada@example.com", key=engine.config.log_key),
    )
    assert "ada@example.com" not in caplog.text


def test_engine_needs_a_config() -> None:
    with pytest.raises(TypeError, match="Config"):
        FlagEngine({"account_id": 1})  # type: ignore[arg-type]


def run_script(gateway: LocalGateway, mode: str) -> tuple[list[dict[str, Any]], float]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.scripts.decide_then_fork", gateway.url, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    ended = time.monotonic()
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], ended


def test_close_lets_the_process_exit_promptly(demo_gateway: LocalGateway) -> None:
    lines, ended = run_script(demo_gateway, "plain")
    assert lines[0] == {"parent": "targeted"}
    assert ended - lines[-1]["closed"] < 2.0


def test_forked_child_evaluates(demo_gateway: LocalGateway) -> None:
    lines, _ = run_script(demo_gateway, "fork")
    assert {"child": "targeted", "other": "not_targeted"} in lines
    lookups = [r["attribute"] for r in demo_gateway.records()["membership_lookups"]]
    assert "grace@example.com" in lookups, "the child asked the gateway itself"


def test_decide_before_start_starts_the_engine(demo_gateway: LocalGateway) -> None:
    config = Config(account_id="123456", sdk_key="local-demo-sdk-key", gateway_url=demo_gateway.url)
    engine = FlagEngine(config)
    try:
        decisions = engine.decide(visitor(config, "ada@example.com"), FLAGS)
        assert decisions["premium_checkout"].reason is Reason.TARGETED, (
            "the first decision waited for the first settings answer"
        )
    finally:
        engine.close()


def test_invalid_new_settings_keep_the_old_ones(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    revision = engine.readiness()["revision"]
    with pytest.raises(SettingsRejected, match="schema: not valid VWO settings at features"):
        engine.apply_settings(
            {"version": 2, "accountId": 123456, "features": "nope", "campaigns": []}
        )
    assert engine.readiness()["revision"] == revision
    assert engine.decide(visitor(engine.config, "ada@example.com"), FLAGS)[
        "premium_checkout"
    ].enabled


def test_a_child_forked_during_start_up_gets_ready() -> None:
    """Fresh interpreters, as under gunicorn --preload: the first SDK set-up imports modules."""
    stuck = 0
    for _ in range(30):
        done = subprocess.run(
            [sys.executable, "-m", "tests.scripts.fork_during_startup", str(DEMO_FLAGS)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        stuck += done.stdout.strip() != "0"
    assert stuck == 0, f"{stuck} of 30 children never became ready"


def test_start_up_answers_within_a_second_when_the_gateway_refuses(
    demo_gateway: LocalGateway,
) -> None:
    demo_gateway.refuse_connections()
    engine = FlagEngine(
        Config(account_id="123456", sdk_key="local-demo-sdk-key", gateway_url=demo_gateway.url)
    )
    try:
        started = time.monotonic()
        assert engine.wait_started(5.0) is False
        decision = engine.decide(visitor(engine.config, "ada@example.com"), ["new_banner"])
        assert time.monotonic() - started < 1.0, "the first attempt failed at once: no waiting"
        assert decision["new_banner"].reason is Reason.NOT_READY
    finally:
        engine.close()


def test_configuration_mistakes_are_said_clearly(
    demo_gateway: LocalGateway, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(demo_gateway, flags=("premium_checkout", "premium_chekout"))
    assert UNKNOWN_FLAGS % ("premium_chekout", "new_banner, premium_checkout") in caplog.text
    wrong = FlagEngine(Config(account_id="123456", sdk_key="typo", gateway_url=demo_gateway.url))
    try:
        wrong.wait_started(5.0)
        error = wrong.readiness()["last_error"]
        assert error == (
            "GatewayError: /server-side/v2-settings: HTTP 400 (sdk key does not match this account)"
        )
        assert error in caplog.text
    finally:
        wrong.close()
    assert engine.ready


def test_async_decisions_ask_memberships_from_the_event_loop(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    member = visitor(engine.config, "ada@example.com")
    decided = asyncio.run(engine.decide_async(member, FLAGS))
    assert (
        decided["premium_checkout"].enabled
        and decided["premium_checkout"].reason is Reason.TARGETED
    )
    assert engine._lookups._executor is None, "no thread pool: the lookup ran on the loop"
    assert [r["attribute"] for r in demo_gateway.records()["membership_lookups"]] == [
        "ada@example.com"
    ]
    slow = make_engine(demo_gateway, lookup_timeout=0.1, evaluation_timeout=0.3)
    demo_gateway.faults.set("check_attribute", latency=3.0)
    started = time.monotonic()
    late = asyncio.run(slow.decide_async(visitor(slow.config, "grace@example.com"), FLAGS))
    assert time.monotonic() - started < 1.0
    assert late["premium_checkout"].reason in (Reason.TIMEOUT, Reason.GATEWAY_ERROR)
    assert late["new_banner"].enabled, "a flag that needs no lookup is decided as ever"


def test_a_lookup_cut_off_by_its_event_loop_ending_is_asked_again(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway, lookup_timeout=5.0, evaluation_timeout=0.2)
    ada = visitor(engine.config, "ada@example.com")
    demo_gateway.faults.set("check_attribute", latency=3.0)
    cut = asyncio.run(engine.decide_async(ada, FLAGS))  # the loop ends with the lookup running
    assert cut["premium_checkout"].reason is Reason.TIMEOUT
    demo_gateway.faults.clear()
    again = asyncio.run(engine.decide_async(ada, FLAGS))
    assert again["premium_checkout"].reason is Reason.TARGETED, "not stuck behind the cut one"
