"""Decision details: the rule, campaign and variation that decided, the Heap segments consulted
and their answers, the revision, the cache; the same from the native evaluator and the SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import EngineFactory, visitor
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.decider import Decider
from vwo_heap_middleware.decision import FlagDecision, Reason
from vwo_heap_middleware.evaluation.caches import DecisionCache
from vwo_heap_middleware.evaluation.flag_index import FlagIndex
from vwo_heap_middleware.evaluation.outcome import Answer, AnswerStatus
from vwo_heap_middleware.offline.flags_file import compile_flags
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.vwo_sdk import VwoSdk

# Two rollouts (the second for everyone) and an A/B test behind a Heap segment.
FLAGS = {
    "account_id": 31,
    "sdk_key": "details-key",
    "flags": [
        {
            "key": "tiered",
            "variables": {"tier": "none"},
            "rules": [
                {"type": "heap_segment", "segment": "gold", "variables": {"tier": "gold"}},
                {"type": "everyone", "variables": {"tier": "basic"}},
            ],
        },
        {
            "key": "ab",
            "variables": {"color": "grey"},
            "rules": [
                {
                    "type": "ab_test",
                    "segment": "gold",
                    "variations": [
                        {"name": "control", "weight": 50, "variables": {"color": "grey"}},
                        {"name": "green", "weight": 50, "variables": {"color": "green"}},
                    ],
                }
            ],
        },
    ],
}
GOLD = ["ada@example.com", "grace@example.com", "linus@example.com", "ken@example.com"]


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway(compile_flags(FLAGS), {"gold": GOLD}) as gateway:
        yield gateway


@pytest.mark.parametrize("evaluation", ["native", "sdk"])
def test_details_name_the_rule_the_variation_and_the_segment_answers(
    evaluation: str, gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(gateway, evaluation=evaluation)
    revision = engine.readiness()["revision"]
    member = engine.decide(visitor(engine.config, "ada@example.com"), ["tiered"])["tiered"]
    assert member.details.to_dict() == {
        "rule_key": "heap_segment1",
        "rule_type": "rollout",
        "rule_index": 0,
        "campaign_id": 1,
        "campaign_key": "tiered_heap_segment1",
        "variation_id": 1,
        "variation_name": "Rollout-rule-1",
        "in_experiment": False,
        "segments": {"gold": "member"},
        "revision": revision,
        "evaluator": evaluation,
        "cached": False,
        "feature_id": 1,
    }
    other = engine.decide(visitor(engine.config, "zoe@example.com"), ["tiered"])["tiered"]
    assert other.variables == {"tier": "basic"}
    assert (other.details.rule_key, other.details.rule_index) == ("everyone2", 1)
    assert other.details.segment_answers == {"gold": "not_member"}, "consulted, not a member"


@pytest.mark.parametrize("evaluation", ["native", "sdk"])
def test_an_ab_test_says_the_visitor_is_in_the_experiment(
    evaluation: str, gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(gateway, evaluation=evaluation)
    seen = {}
    for identity in GOLD:
        decision = engine.decide(visitor(engine.config, identity), ["ab"])["ab"]
        details = decision.details
        assert (details.rule_type, details.in_experiment) == ("ab_test", True)
        assert (
            decision.variables["color"]
            == {"control": "grey", "green": "green"}[str(details.variation_name)]
        )
        seen[identity] = details.variation_name
    assert set(seen.values()) == {"control", "green"}, "both arms among four visitors"
    stranger = engine.decide(visitor(engine.config, "zoe@example.com"), ["ab"])["ab"]
    assert not stranger.enabled and stranger.details.rule_key is None
    assert not stranger.details.in_experiment


def test_the_native_evaluator_and_the_sdk_give_the_same_details(
    gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    native = make_engine(gateway, evaluation="native")
    sdk = make_engine(gateway, evaluation="sdk")
    for identity in [*GOLD, "zoe@example.com", "max@example.com"]:
        ours = native.decide(visitor(native.config, identity), ["tiered", "ab"])
        theirs = sdk.decide(visitor(sdk.config, identity), ["tiered", "ab"])
        for key in ("tiered", "ab"):
            mine, oracle = ours[key].details.to_dict(), theirs[key].details.to_dict()
            assert (mine.pop("evaluator"), oracle.pop("evaluator")) == ("native", "sdk")
            assert mine == oracle, (identity, key)


def test_a_recalled_decision_says_it_came_from_the_cache(
    gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(gateway)
    ada = visitor(engine.config, "ada@example.com")
    first = engine.decide(ada, ["tiered"])["tiered"]
    again = engine.decide(ada, ["tiered"])["tiered"]
    assert again == first, "the same decision"
    assert (first.details.cached, again.details.cached) == (False, True)
    assert again.details.rule_key == first.details.rule_key == "heap_segment1"
    assert first.to_dict() == again.to_dict(), "details only when asked for"
    assert again.to_dict(details=True)["details"]["cached"] is True


@pytest.fixture
def decider() -> Iterator[tuple[Decider, FlagIndex, Config]]:
    config = Config(account_id="31", sdk_key="details-key", gateway_url="http://127.0.0.1:9")
    sdk = VwoSdk(config, lambda event: None)
    sdk.prepare()
    decider = Decider(config, sdk, DecisionCache(100, 3600))
    index = decider.load(compile_flags(FLAGS))
    assert index is not None
    yield decider, index, config
    sdk.release()


@pytest.mark.parametrize(
    ("status", "value", "answer", "decided"),
    [
        (AnswerStatus.STALE, True, "stale", ("gold", Reason.TARGETED)),
        (AnswerStatus.FAILED, None, "unknown", ("basic", Reason.TARGETED)),
        (AnswerStatus.TIMEOUT, None, "unknown", ("basic", Reason.TARGETED)),
    ],
)
def test_stale_and_unknown_segment_answers_are_named(
    decider: tuple[Decider, FlagIndex, Config],
    status: AnswerStatus,
    value: bool | None,
    answer: str,
    decided: tuple[str, Reason],
) -> None:
    the_decider, index, config = decider
    ada = visitor(config, "ada@example.com")
    plan = the_decider.plan(index, ada, ["tiered"], time.monotonic() + 1)
    the_decider.finish(plan, ada, {("gold", "ada@example.com"): Answer(value, status)})
    decision: FlagDecision = plan.results["tiered"]
    assert (decision.variables["tier"], decision.reason) == decided
    assert decision.details.segment_answers == {"gold": answer}
    assert decision.stale is (status is AnswerStatus.STALE)


def test_a_default_for_a_failed_lookup_still_names_the_segment(
    decider: tuple[Decider, FlagIndex, Config],
) -> None:
    the_decider, index, config = decider
    ada = visitor(config, "ada@example.com")
    plan = the_decider.plan(index, ada, ["ab"], time.monotonic() + 1)
    the_decider.finish(plan, ada, {("gold", "ada@example.com"): Answer(None, AnswerStatus.FAILED)})
    decision = plan.results["ab"]
    assert decision.reason is Reason.GATEWAY_ERROR and not decision.enabled
    assert decision.details.segment_answers == {"gold": "unknown"}
