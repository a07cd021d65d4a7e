"""The decider on its own: plan and finish with answers given, no gateway, no I/O."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import SHOP, visitor
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.decider import Decider
from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.evaluation import overrides
from vwo_heap_middleware.evaluation.caches import DecisionCache
from vwo_heap_middleware.evaluation.flag_index import FlagIndex
from vwo_heap_middleware.evaluation.outcome import Answer, AnswerStatus
from vwo_heap_middleware.offline.flags_file import compile_flags
from vwo_heap_middleware.vwo_sdk import VwoSdk

VIP = ("vip", "vip@example.com")
FLAGS = ["premium_checkout", "new_banner"]
Loaded = tuple[Decider, FlagIndex, Config]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the decider touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def loaded(no_network: None) -> Iterator[Loaded]:
    settings = compile_flags(SHOP)
    config = Config(account_id="777", sdk_key="shop-key", gateway_url="http://127.0.0.1:9")
    sdk = VwoSdk(config, lambda event: None)
    sdk.prepare()
    decider = Decider(config, sdk, DecisionCache(100, 3600))
    index = decider.load(settings)
    assert index is not None
    yield decider, index, config
    sdk.release()


def fresh(value: bool, ttl: float = 300) -> Answer[bool]:
    return Answer(value, AnswerStatus.FRESH, time.monotonic() + ttl)


def test_a_plan_says_which_answers_are_missing(loaded: Loaded) -> None:
    decider, index, config = loaded
    plan = decider.plan(index, visitor(config, "vip@example.com"), FLAGS, time.monotonic() + 1)
    assert set(plan.todo) == set(FLAGS) and plan.results == {}
    assert plan.memberships == {VIP}, "only premium_checkout's rule asks the gateway"
    assert plan.details is None


def test_finish_decides_on_the_answers_and_returns_the_events(loaded: Loaded) -> None:
    decider, index, config = loaded
    vip = visitor(config, "vip@example.com")
    plan = decider.plan(index, vip, FLAGS, time.monotonic() + 1)
    events = decider.finish(plan, vip, {VIP: fresh(True)})
    assert plan.results["premium_checkout"] == FlagDecision(
        "premium_checkout", True, {"tier_label": "<b>Gold</b>"}, Reason.TARGETED, evaluator="native"
    )
    assert plan.results["new_banner"].enabled
    shown = [e.body["d"]["event"]["props"]["id"] for e in events]
    assert len(shown) == 2, "an impression per flag shown, handed back to the engine to send"
    again = decider.plan(index, vip, FLAGS, time.monotonic() + 1)
    assert again.todo == {} and again.cached == 2, "both cached, on fresh answers"
    assert again.expires <= time.monotonic() + 300, "as long as the membership answer holds"


@pytest.mark.parametrize(
    ("status", "reason"),
    [(AnswerStatus.TIMEOUT, Reason.TIMEOUT), (AnswerStatus.FAILED, Reason.GATEWAY_ERROR)],
)
def test_a_missing_answer_gives_the_default_and_is_not_kept(
    loaded: Loaded, status: AnswerStatus, reason: Reason
) -> None:
    decider, index, config = loaded
    vip = visitor(config, "vip@example.com")
    plan = decider.plan(index, vip, FLAGS, time.monotonic() + 1)
    decider.finish(plan, vip, {VIP: Answer(None, status)})
    assert plan.results["premium_checkout"] == FlagDecision(
        "premium_checkout", False, reason=reason
    )
    assert plan.expires == -math.inf, "a default for a failure is never reused"
    assert "premium_checkout" in decider.plan(index, vip, FLAGS, time.monotonic() + 1).todo


def test_a_stale_answer_decides_but_is_marked_and_not_cached(loaded: Loaded) -> None:
    decider, index, config = loaded
    vip = visitor(config, "vip@example.com")
    plan = decider.plan(index, vip, ["premium_checkout"], time.monotonic() + 1)
    decider.finish(plan, vip, {VIP: Answer(True, AnswerStatus.STALE)})
    decided = plan.results["premium_checkout"]
    assert decided.enabled and decided.stale
    assert "premium_checkout" in decider.plan(index, vip, FLAGS, time.monotonic() + 1).todo


def test_not_ready_no_user_unknown_and_overridden(loaded: Loaded) -> None:
    decider, index, config = loaded
    deadline = time.monotonic() + 1
    waiting = decider.plan(None, visitor(config, "vip@example.com"), FLAGS, deadline)
    assert {d.reason for d in waiting.results.values()} == {Reason.NOT_READY}
    nobody = decider.plan(index, visitor(config), FLAGS, deadline)
    assert {d.reason for d in nobody.results.values()} == {Reason.NO_USER}
    unknown = decider.plan(index, visitor(config, "x"), ["nope"], deadline)
    assert unknown.results["nope"].reason is Reason.UNKNOWN_FLAG
    layer = {"premium_checkout": overrides.decision("premium_checkout", True)}
    overrides.add_layer(layer)
    try:
        forced = decider.plan(index, visitor(config, "x"), FLAGS, deadline)
    finally:
        overrides.remove_layer(layer)
    assert forced.results["premium_checkout"].reason is Reason.OVERRIDE
    assert list(forced.todo) == ["new_banner"] and forced.expires == -math.inf


def test_loading_the_same_revision_again_changes_nothing(
    loaded: Loaded,
) -> None:
    decider, index, config = loaded
    assert decider.load(compile_flags(SHOP), index) is None
    changed = compile_flags({**SHOP, "flags": [SHOP["flags"][0]]})  # type: ignore[index]
    assert decider.load(changed, index) is not None
