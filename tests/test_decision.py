"""``FlagDecision`` and ``Reason`` on their own."""

from __future__ import annotations

from vwo_heap_middleware.config import FlagDefault
from vwo_heap_middleware.decision import FlagDecision, Reason


def test_a_decision_reads_like_a_flag() -> None:
    on = FlagDecision("premium", True, {"tier": "gold"}, Reason.TARGETED)
    assert on and on.variable("tier") == "gold" and on.variable("missing", 0) == 0
    assert on.to_dict() == {"enabled": True, "variables": {"tier": "gold"}, "reason": "targeted"}
    assert str(Reason.TARGETED) == "targeted"
    stale = FlagDecision("premium", True, {}, Reason.TARGETED, stale=True)
    assert stale.to_dict()["stale"] is True


def test_defaults_come_from_the_configured_default() -> None:
    default = FlagDecision.default("x", Reason.TIMEOUT, FlagDefault(True, {"n": 1}))
    assert default == FlagDecision("x", True, {"n": 1}, Reason.TIMEOUT)
    assert not FlagDecision.default("x", Reason.NO_USER, FlagDefault())


def test_one_vocabulary_for_openfeature_and_opentelemetry() -> None:
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import Reason as OpenFeatureReason

    for reason in Reason:
        assert reason.evaluation_reason in set(OpenFeatureReason)
        assert reason.error_code is None or reason.error_code in set(ErrorCode)
        assert (reason.error_code is None) == (reason.error_type is None)
    assert Reason.TARGETED.evaluation_reason == "TARGETING_MATCH"
    assert Reason.UNKNOWN_FLAG.error_code == "FLAG_NOT_FOUND"
