"""What each flag's rules need from a request, read from real settings files."""

from __future__ import annotations

import copy
import json

from tests.support import DATA
from vwo_heap_middleware.evaluation.flag_index import FlagIndex, FlagNeeds
from vwo_heap_middleware.testing.gateway import load_flags_file


def raw_settings() -> dict[str, object]:
    return json.loads((DATA / "raw_settings.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_needs_of_each_flag_in_raw_settings() -> None:
    index = FlagIndex.from_settings(raw_settings())
    assert index.flags["vip_segment"] == FlagNeeds(
        lists=(("heap_identity", "vip_list"),), user_details=False, request_facts=False
    )
    assert index.flags["berlin_only"] == FlagNeeds((), user_details=True, request_facts=True)
    assert index.flags["plan_badge"] == FlagNeeds((), user_details=False, request_facts=False)
    assert set(index.flags) == {
        "plan_badge",
        "half_rollout",
        "everyone_on",
        "identity_equals",
        "berlin_only",
        "vip_segment",
    }


def test_compiled_flags_file() -> None:
    index = FlagIndex.from_settings(load_flags_file(DATA / "flags_all_rules.toml"))
    assert index.flags["segment_only"].lists == (("heap_identity", "vip_list"),)
    assert index.flags["quarter"] == FlagNeeds((), False, False)


def test_user_agent_and_ip_rules_make_the_decision_depend_on_them() -> None:
    settings = raw_settings()
    campaign = settings["campaigns"][0]  # type: ignore[index]
    campaign["variations"][0]["segments"] = {"and": [{"ua": "wildcard(*Firefox*)"}]}
    needs = FlagIndex.from_settings(settings).flags["plan_badge"]
    assert needs.request_facts and not needs.user_details


def test_holdout_segments_count_for_every_flag() -> None:
    settings = raw_settings()
    settings["holdouts"] = [{"segments": {"or": [{"city": "Berlin"}]}}]
    index = FlagIndex.from_settings(settings)
    assert all(needs.user_details for needs in index.flags.values())


def test_revision_follows_the_content_not_the_key_order() -> None:
    settings = raw_settings()
    reordered = dict(reversed(list(copy.deepcopy(settings).items())))
    assert FlagIndex.from_settings(settings).revision == FlagIndex.from_settings(reordered).revision
    settings["version"] = 99
    assert FlagIndex.from_settings(settings).revision != FlagIndex.from_settings(reordered).revision


def test_odd_settings_are_skipped_not_fatal() -> None:
    index = FlagIndex.from_settings(
        {"features": [None, {"key": 7}, {"key": "ok", "rules": [None, {"campaignId": 404}]}]}
    )
    assert index.flags == {"ok": FlagNeeds((), False, False)}


def test_memberships_for_a_visitors_custom_variables() -> None:
    needs = FlagNeeds((("heap_identity", "vip"), ("plan", "gold_list")), False, False)
    assert needs.memberships({"heap_identity": "ada@example.com", "plan": 7}) == {
        ("vip", "ada@example.com"),
        ("gold_list", "7"),
    }
    assert needs.memberships({}) == set()
