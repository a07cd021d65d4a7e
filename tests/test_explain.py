"""Explanations: the verdict is the engine's own (checked over the native evaluator's generated
cases), each rule's walk agrees with what the evaluator did, node by node."""

from __future__ import annotations

import time
from typing import Any

from tests.evaluation.native_cases import ACCOUNT, SDK_KEY, Generator
from tests.support import DEMO_FLAGS, EngineFactory, visitor
from vwo_heap_middleware import FlagEngine
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.decider import Decider
from vwo_heap_middleware.evaluation.caches import DecisionCache
from vwo_heap_middleware.evaluation.details import FlagRules
from vwo_heap_middleware.evaluation.outcome import Answer, AnswerStatus, LookedUp
from vwo_heap_middleware.explain import segment_checks, walk
from vwo_heap_middleware.identity import HeapIdentity
from vwo_heap_middleware.testing import override_flags
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.visitor import Visitor
from vwo_heap_middleware.vwo_sdk import VwoSdk

SETTINGS_ROUNDS = 40
USERS = 20


def answers_for(wanted: set[tuple[str, str]], given: dict[tuple[str, str], bool]) -> Any:
    """The generated answers as the engine's lookups give them; an unknown one failed."""
    expires = time.monotonic() + 300
    return {
        key: Answer(given[key], AnswerStatus.FRESH, expires)
        if key in given
        else Answer(None, AnswerStatus.FAILED)
        for key in wanted
    }


def test_explain_gives_the_verdict_finish_gives_on_generated_cases() -> None:
    """For each generated case: ``Decider.finish`` (what a request gets) and
    ``Decider.explain`` (what ``vwo-heap explain`` prints) on the same answers."""
    gen = Generator(2026)
    config = Config(account_id=str(ACCOUNT), sdk_key=SDK_KEY, gateway_url="http://127.0.0.1:9")
    sdk = VwoSdk(config, lambda event: None)
    sdk.prepare()
    compared = walked = enabled = 0
    try:
        for _ in range(SETTINGS_ROUNDS):
            settings = gen.settings()
            decider = Decider(config, sdk, DecisionCache(10_000, 3600))
            index = decider.load(settings)
            assert index is not None
            for context in [gen.context() for _ in range(USERS)] + gen.edge_contexts(settings):
                given = gen.memberships(context)
                who = Visitor(HeapIdentity(), context["id"], context)
                for key in index.flags:
                    plan = decider.plan(index, who, [key], time.monotonic() + 1)
                    if key not in plan.todo:
                        continue
                    answers = answers_for(plan.memberships, given)
                    decider.finish(plan, who, answers)
                    served = plan.results[key]
                    looked_up = LookedUp.of(answers, None)
                    explained, trace = decider.explain(index, who, key, looked_up)
                    assert explained == served, (key, context)
                    mine, theirs = explained.details.to_dict(), served.details.to_dict()
                    assert mine == theirs, (key, context)
                    compared += 1
                    enabled += served.enabled
                    if trace is None:
                        continue
                    walks = walk(trace, index.rules[key], answers)
                    gave = [w for w in walks if w.verdict.startswith("gave variation")]
                    if served.details.rule_key is not None:
                        assert gave and gave[-1].key == served.details.rule_key
                        assert repr(served.details.variation_name) in gave[-1].verdict
                    else:
                        assert not gave
                    known = {k: a.value if a.known else None for k, a in answers.items()}
                    for step in trace:
                        if step.stage == "segment":
                            checks = segment_checks(
                                step.rule.segment_dsl, step.properties or {}, answers, known
                            )
                            assert checks[0].passed == step.passed, "the walk agrees, node by node"
                    walked += 1
    finally:
        sdk.release()
    assert compared > 3000 and walked > 0.8 * compared and enabled > 0.1 * compared


def test_rules_never_reached_are_listed_after_the_deciding_one() -> None:
    settings_rules = FlagRules.read(
        {
            "key": "f",
            "rules": [
                {"campaignId": 1, "ruleKey": "first"},
                {"campaignId": 2, "ruleKey": "second"},
            ],
        },
        {
            "1": {"id": 1, "type": "FLAG_ROLLOUT", "variations": [{"id": 1, "name": "v"}]},
            "2": {"id": 2, "type": "FLAG_ROLLOUT", "variations": [{"id": 1, "name": "w"}]},
        },
    )
    walks = walk([], settings_rules, {})
    assert [(w.key, w.verdict) for w in walks] == [
        ("first", "not reached"),
        ("second", "not reached"),
    ]


def test_the_engine_explains_with_live_answers_and_sends_no_impression(
    demo_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    engine = make_engine(demo_gateway)
    ada = visitor(engine.config, "ada@example.com")
    explanation = engine.explain("premium_checkout", ada)
    assert explanation.decision == engine.decide(ada, ["premium_checkout"])["premium_checkout"]
    assert explanation.decision.details.segment_answers == {"heap_premium_users": "member"}
    (rule,) = explanation.rules
    assert (rule.key, rule.verdict) == ("heap_segment1", "gave variation 'Rollout-rule-1'")
    text = "\n".join(explanation.lines())
    assert "'ada@example.com' in Heap segment 'heap_premium_users': member" in text
    assert engine.flush_events(5.0)
    assert demo_gateway.records()["events"].get("vwo_variationShown") == 1, "decide's only"


def test_an_explanation_outside_the_rules_says_why() -> None:
    engine = FlagEngine.offline(DEMO_FLAGS)
    engine.start()
    try:
        anonymous = Visitor(HeapIdentity(), None, None)
        assert "nothing to evaluate" in str(engine.explain("premium_checkout", anonymous).note)
        unknown = engine.explain("premum_checkout", visitor(engine.config, "ada@example.com"))
        assert "no such flag" in str(unknown.note) and "premium_checkout" in str(unknown.note)
        with override_flags({"premium_checkout": True}):
            forced = engine.explain("premium_checkout", visitor(engine.config, "x@example.com"))
        assert forced.decision.enabled and forced.note == "set by override_flags"
    finally:
        engine.close()
