"""The native evaluator: equal to the real SDK on every compared case, mutants caught, and the
SDK still deciding what the evaluator does not cover."""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.evaluation.native_cases import NAMES, Differential, Generator, Tally, run_generated
from tests.support import DATA, DEMO_FLAGS, SHOP, EngineFactory, visitor
from vwo_heap_middleware.evaluation import native as native_evaluator
from vwo_heap_middleware.evaluation.impressions import SdkFacts, uuid5_hex
from vwo_heap_middleware.evaluation.native import Fallback, NativeSettings
from vwo_heap_middleware.evaluation.outcome import Answers
from vwo_heap_middleware.identity import short_hash
from vwo_heap_middleware.offline.flags_file import (
    compile_flags,
    load_flags_file,
    load_settings_file,
)
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.vwo_sdk import client as sdk_client

CASES = 22_000  # in `make test`; `make differential` runs LARGE_CASES
LARGE_CASES = int(os.environ.get("VWO_HEAP_DIFFERENTIAL_CASES", "250000"))


def assert_equal_to_sdk(tally: Tally, cases: int) -> None:
    assert tally.cases == cases
    assert tally.mismatches == [], "\n\n".join(tally.mismatches[:3])
    assert tally.native >= 0.9 * cases, "most calls must be decided natively, not handed over"
    assert tally.enabled > 0.1 * tally.native and tally.impressions > 0, "cases that say little"


def test_native_decisions_equal_the_sdks_on_generated_cases() -> None:
    tally = run_generated(seed=20261129, cases=CASES)
    assert_equal_to_sdk(tally, CASES)


@pytest.mark.differential
@pytest.mark.timeout(3600)
def test_native_decisions_equal_the_sdks_on_a_large_run() -> None:
    seed = int(os.environ.get("VWO_HEAP_DIFFERENTIAL_SEED", "1"))
    tally = run_generated(seed=seed, cases=LARGE_CASES)
    assert_equal_to_sdk(tally, LARGE_CASES)


def project_settings() -> Iterator[dict[str, Any]]:
    yield compile_flags(SHOP)
    yield load_flags_file(DEMO_FLAGS)
    for path in sorted(DATA.glob("*.toml")):
        yield load_flags_file(path)
    yield load_settings_file(DATA / "raw_settings.json")


def test_native_decisions_equal_the_sdks_on_the_projects_own_flags() -> None:
    gen, diff, tally = Generator(7), Differential(), Tally()
    identities = ["ada@example.com", "vip@example.com", "grace@example.com", "nobody@x.io", "0042"]
    for settings in project_settings():
        contexts = []
        for n in range(300):
            context = gen.context()
            names = list(NAMES) + ["heap_identity", "heap_user", "plan", "country_code"]
            for name in names:
                context["custom_variables"][name] = gen.r.choice(identities + [str(n)])
            contexts.append(context)
        diff.run(settings, diff.settings_cases(settings, contexts, gen), tally, 10**9)
    assert tally.mismatches == [], "\n\n".join(tally.mismatches[:3])
    assert tally.native > 0.9 * (tally.cases - tally.unsupported) and tally.enabled > 100


@pytest.mark.parametrize("mutant", ["bucket off by one", "floor for ceil in ranges", "rule order"])
def test_the_suite_catches_mutants(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if mutant == "bucket off by one":
        exact = native_evaluator.bucket
        monkeypatch.setattr(native_evaluator, "bucket", lambda key, top: exact(key, top) + 1)
    elif mutant == "floor for ceil in ranges":

        def floored(weight: Any) -> int:
            return min(math.floor(weight * 100), 10000) if weight else 0

        monkeypatch.setattr(native_evaluator, "_range_size", floored)
    else:
        compile_flag = native_evaluator._compile_flag

        def reordered(*args: Any) -> native_evaluator._Flag:
            flag = compile_flag(*args)
            return native_evaluator._Flag(
                flag.rollouts[::-1], flag.experiments[::-1], flag.impact_campaign
            )

        monkeypatch.setattr(native_evaluator, "_compile_flag", reordered)
    tally = run_generated(seed=7, cases=3000)
    assert tally.mismatches, f"the differential suite missed the mutant: {mutant}"


def flag_with(**campaign: Any) -> dict[str, Any]:
    """Settings with one rollout flag (``plain``) and one flag whose campaign has ``campaign``."""
    settings = compile_flags(
        {
            "account_id": 777,
            "sdk_key": "shop-key",
            "flags": [
                {"key": "plain", "rules": [{"type": "everyone"}]},
                {"key": "odd", "rules": [{"type": "everyone"}]},
            ],
        }
    )
    settings["campaigns"][1].update(campaign)
    return settings


COUNTRY = {"and": [{"country": "IN"}, {"custom_variable": {"heap_identity": "x"}}]}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"variations": [{"id": 1, "name": "r", "weight": 100, "segments": COUNTRY}]}, "'country'"),
        ({"segments": {"ua": "wildcard(*Chrome*)"}, "type": "FLAG_TESTING"}, "'ua'"),
        (
            {"variations": [{"id": 1, "name": "r", "weight": 100, "segments": {"and": [{}]}}]},
            "node",
        ),
    ],
)
def test_flags_the_evaluator_does_not_cover_go_to_the_sdk(change: dict[str, Any], why: str) -> None:
    native = NativeSettings(flag_with(**change), FACTS)
    assert "plain" in native.flags
    assert "odd" not in native.flags and why in native.unsupported["odd"]


def test_groups_holdouts_usage_tracking_and_debugger_go_to_the_sdk() -> None:
    grouped = flag_with()
    grouped["campaignGroups"] = {"2": 1}
    grouped["groups"] = {"1": {"name": "g", "campaigns": [2]}}
    assert NativeSettings(grouped, FACTS).unsupported == {"odd": "a mutually exclusive group"}
    for extra, why in (({"holdouts": [{"id": 1}]}, "holdouts"), ({"isMAU": True}, "isMAU")):
        native = NativeSettings({**flag_with(), **extra}, FACTS)
        assert not native.flags and all(why in reason for reason in native.unsupported.values())
    debugged = flag_with()
    debugged["features"][1]["isDebuggerEnabled"] = True
    assert NativeSettings(debugged, FACTS).unsupported == {"odd": "debugger events"}


NONE = Answers()
FACTS = SdkFacts("vwo-fme-python-sdk", "1.65.0", "777", "shop-key")


def test_calls_the_sdk_would_fail_on_are_handed_over() -> None:
    settings = flag_with(
        variations=[
            {
                "id": 1,
                "name": "r",
                "weight": 100,
                "segments": {"custom_variable": {"version": "gt(..)"}},
            }
        ]
    )
    native = NativeSettings(settings, FACTS)
    with pytest.raises(Fallback):  # the SDK's int("") on "1.x" vs ".."
        native.evaluate("odd", {"id": "u", "custom_variables": {"version": "1.x"}}, NONE)
    with pytest.raises(Fallback):
        native.evaluate("plain", {"id": "u", "custom_variables": {}, "bucketingSeed": " "}, NONE)
    with pytest.raises(Fallback):
        native.evaluate("plain", {"id": 5, "custom_variables": {}}, NONE)
    with pytest.raises(Fallback):
        native.evaluate("plain", {"id": "u", "variation_targeting_variables": {}}, NONE)
    assert native.evaluate("plain", {"id": "u", "custom_variables": {}}, NONE).enabled


def test_an_uncovered_flag_is_decided_by_the_sdk_and_says_so(
    make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = flag_with(
        variations=[{"id": 1, "name": "r", "weight": 100, "segments": {"or": [COUNTRY]}}]
    )
    caplog.set_level(logging.INFO, "vwo_heap_middleware")
    with LocalGateway(settings, {}) as gateway:
        engine = make_engine(gateway, flags=("plain", "odd"), debug_header=True)
        decisions = engine.decide(visitor(engine.config, "ada@example.com"), ["plain", "odd"])
    assert decisions["plain"].evaluator == "native" and decisions["plain"].enabled
    assert decisions["odd"].evaluator == "sdk" and not decisions["odd"].enabled
    assert engine.readiness()["decided_by_sdk"] == {"odd": "a 'country' segment"}
    assert any("'odd' is decided by the VWO SDK" in r.getMessage() for r in caplog.records)


def test_native_impressions_reach_the_gateway_like_the_sdks(
    shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    native = make_engine(shop_gateway)
    sdk = make_engine(shop_gateway, evaluation="sdk")
    for engine, who in ((native, "vip@example.com"), (sdk, "vip@example.com")):
        decided = engine.decide(visitor(engine.config, who), ["premium_checkout"])
        assert decided["premium_checkout"].enabled
        assert engine.flush_events(5.0)
    log = shop_gateway.records()["event_log"]
    shown = [e for e in log if e["name"] == "vwo_variationShown"]
    assert len(shown) == 2
    assert shown[0]["body"]["d"]["visId"] == shown[1]["body"]["d"]["visId"]
    props = [e["body"]["d"]["event"]["props"] for e in shown]
    assert [(p["id"], p["variation"]) for p in props] == [(1, "1"), (1, "1")]


def test_the_sdks_usage_block_rides_on_the_first_impression_only() -> None:
    diff = Differential()
    settings = compile_flags(SHOP)
    diff.sdk.load(settings)
    native = NativeSettings(settings, diff.sdk.facts())
    member = {"id": "u1", "custom_variables": {"heap_identity": "vip@example.com"}}
    answers = Answers({("vip", "vip@example.com"): True})
    usage = diff.sdk.take_usage_meta()
    assert diff.sdk.take_usage_meta() is None, "taken once"
    first = native.evaluate("premium_checkout", member, answers, usage_meta=usage).events[0]
    again = native.evaluate("premium_checkout", member, answers).events[0]
    by_sdk = diff.sdk.evaluate("premium_checkout", member, answers)
    meta = first.body["d"]["event"]["props"]["vwoMeta"]
    assert meta["env"] == "diff-key" and meta["gs"] == 1
    assert "vwoMeta" not in again.body["d"]["event"]["props"]
    assert "vwoMeta" not in by_sdk.events[0].body["d"]["event"]["props"], "taken once, in all"


def test_native_evaluation_is_off_on_an_sdk_it_was_not_proven_on(
    shop_gateway: LocalGateway,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sdk_client, "VERIFIED_SDKS", {"0.0.1": True})
    engine = make_engine(shop_gateway)
    decided = engine.decide(visitor(engine.config, "vip@example.com"), ["premium_checkout"])
    assert decided["premium_checkout"].enabled and decided["premium_checkout"].evaluator == "sdk"
    assert "not a release it was proven on (0.0.1)" in caplog.text
    assert set(engine.readiness()["decided_by_sdk"]) == {"premium_checkout", "new_banner"}


def test_shadow_mode_lets_the_sdk_decide_and_logs_differences_without_identities(
    shop_gateway: LocalGateway,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(shop_gateway, evaluation="shadow")
    user = visitor(engine.config, "vip@example.com")
    decided = engine.decide(user, ["premium_checkout"])["premium_checkout"]
    assert decided.enabled and decided.evaluator == "sdk"
    assert "shadow evaluation" not in caplog.text, "no difference: nothing logged"
    monkeypatch.setattr(native_evaluator, "bucket", lambda key, top: top + 1)  # nobody in
    other = visitor(engine.config, "other@example.com")
    assert engine.decide(other, ["new_banner"])["new_banner"].enabled, "the SDK decided"
    shadowed = [r.getMessage() for r in caplog.records if "shadow evaluation" in r.getMessage()]
    assert len(shadowed) == 1 and "'new_banner'" in shadowed[0]
    assert short_hash(other.user_id or "", key=engine.config.log_key) in shadowed[0]
    assert "other@example.com" not in shadowed[0]


def test_every_flag_is_native_or_left_to_the_sdk_with_a_reason() -> None:
    settings = Generator(3).settings()
    Differential().sdk.load(settings)
    native = NativeSettings(settings, FACTS)
    assert set(native.flags) | set(native.unsupported) == {f["key"] for f in settings["features"]}


def test_the_first_flag_with_a_key_is_the_one_compiled() -> None:
    settings = flag_with()
    settings["features"].append(dict(settings["features"][0], id=99, rules=[]))
    native = NativeSettings(settings, FACTS)
    assert list(native.flags) == ["plain", "odd"]
    assert native.evaluate("plain", {"id": "u", "custom_variables": {}}, NONE).enabled


@pytest.mark.parametrize("name", ["ret-7@example.com", "Zoë ☃", "", "x" * 300, "D" + "0" * 32])
def test_uuid5_hex_is_uuid5(name: str) -> None:
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "https://vwo.com")
    assert uuid5_hex(namespace.bytes, name) == uuid.uuid5(namespace, name).hex.upper()
