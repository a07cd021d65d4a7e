"""``FlagDecision`` and the ``DecisionCache`` on their own."""

from __future__ import annotations

from vwo_heap_middleware.config import FlagDefault
from vwo_heap_middleware.decision import DecisionCache, FlagDecision, Reason


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


def test_cache_keeps_decisions_until_reset() -> None:
    cache = DecisionCache(maxsize=2, ttl=60)
    decision = FlagDecision("a", True)
    cache.put(("a", "user"), decision)
    assert cache.get(("a", "user")) is decision and len(cache) == 1
    assert cache.get(("a", "other")) is None
    cache.put(("b", 1), decision)
    cache.put(("c", 1), decision)
    assert len(cache) == 2, "bounded"
    cache.reset()
    assert len(cache) == 0 and cache.get(("c", 1)) is None


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = DecisionCache(maxsize=10, ttl=0)
    cache.put("k", FlagDecision("k", True))
    assert cache.get("k") is None
