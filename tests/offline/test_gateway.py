"""The offline engine: settings and segments from files, ready at once, no network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.support import DATA, DEMO_FLAGS, DEMO_SEGMENTS, visitor
from vwo_heap_middleware import Config, FlagEngine, Reason
from vwo_heap_middleware.offline.flags_file import DataFileError
from vwo_heap_middleware.offline.gateway import GATEWAY_NOT_CONTACTED, OFFLINE_GATEWAY_URL


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the offline engine made a network call")

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", refuse)


@pytest.fixture
def engine() -> Iterator[FlagEngine]:
    engine = FlagEngine.offline(offline_flags=DEMO_FLAGS, offline_segments=DEMO_SEGMENTS)
    yield engine
    engine.close()


def test_decides_at_once_from_files(engine: FlagEngine) -> None:
    ada = visitor(engine.config, "ada@example.com", user_agent="UA", peer="203.0.113.9")
    decisions = engine.decide(ada, ["premium_checkout", "new_banner"])
    assert decisions["premium_checkout"].reason is Reason.TARGETED, "no not_ready, ever"
    assert decisions["premium_checkout"].variables == {"tier_label": "Premium", "discount_pct": 15}
    bob = engine.decide(visitor(engine.config, "bob@example.com"), ["premium_checkout"])
    assert bob["premium_checkout"].reason is Reason.NOT_TARGETED
    assert engine.ready and engine.config.gateway_url == OFFLINE_GATEWAY_URL
    assert engine.config.account_id == "123456", "the account of the flags file"
    stats = engine.stats()
    assert stats["events_held"] == 3, "the SDK's init event and two impressions: counted"
    assert stats["events_sent"] == 0, "and not sent"


def test_same_decisions_as_the_gateway_backed_engine(engine: FlagEngine) -> None:
    """The same path as production: the A/B split of the offline engine is VWO's."""
    with_gateway = FlagEngine.offline(offline_flags=DATA / "flags_all_rules.toml", decision_ttl=0)
    try:
        users = [f"user-{n}" for n in range(40)]
        colors = {
            u: with_gateway.decide(visitor(with_gateway.config, u), ["ab"])["ab"].variables["color"]
            for u in users
        }
        assert set(colors.values()) == {"grey", "green"}
    finally:
        with_gateway.close()


def test_settings_json_and_documents(tmp_path: Path) -> None:
    raw = DATA / "raw_settings.json"
    engine = FlagEngine.offline(
        offline_flags=raw, offline_segments={"vip_list": ["Zoë@example.com"]}
    )
    try:
        zoe = visitor(engine.config, "Zoë@example.com")
        assert engine.decide(zoe, ["vip_segment"])["vip_segment"].enabled
    finally:
        engine.close()
    document = {"account_id": 9, "flags": [{"key": "on", "rules": [{"type": "everyone"}]}]}
    engine = FlagEngine.offline(offline_flags=document)
    try:
        assert engine.decide(visitor(engine.config, "x"), ["on"])["on"].enabled
        assert engine.config.account_id == "9"
    finally:
        engine.close()
    settings = json.loads(raw.read_text(encoding="utf-8"))
    engine = FlagEngine.offline(offline_flags=settings)
    engine.close()


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VWO_ACCOUNT_ID", "VWO_SDK_KEY", "VWO_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    config = Config.from_env(
        {"VWO_HEAP_OFFLINE_FLAGS": str(DEMO_FLAGS), "VWO_HEAP_OFFLINE_SEGMENTS": str(DEMO_SEGMENTS)}
    )
    engine = FlagEngine(config)
    try:
        ada = visitor(engine.config, "ada@example.com")
        assert engine.decide(ada, ["premium_checkout"])["premium_checkout"].enabled
    finally:
        engine.close()


def test_bad_files_fail_at_configuration_time(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="VWO_HEAP_OFFLINE_FLAGS: offline_flags must be a readable"
    ):
        Config.from_env({"VWO_HEAP_OFFLINE_FLAGS": str(tmp_path / "missing.toml")})
    broken = tmp_path / "flags.toml"
    broken.write_text("[[flags]]\nkey = 'x'\n[[flags.rules]]\ntype = 'nope'\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="flag 'x', rule 1: 'type' must be one of"):
        FlagEngine.offline(offline_flags=broken)


LOCATION = {
    "VWO_ACCOUNT_ID": ("account_id", "777"),
    "VWO_SDK_KEY": ("sdk_key", "prod-key"),
    "VWO_GATEWAY_URL": ("gateway_url", "https://gateway.example.com"),
}
SUBSETS = [tuple(name for n, name in enumerate(LOCATION) if mask & (1 << n)) for mask in range(8)]


@pytest.mark.parametrize("given", SUBSETS, ids=lambda names: "+".join(names) or "none")
def test_offline_each_vwo_variable_is_optional(
    given: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """A .env shared with production names the account but no gateway, or any other part:
    what is given is checked and used, the rest comes from the flags file, nothing is asked."""
    environ = {name: LOCATION[name][1] for name in given}
    environ["VWO_HEAP_OFFLINE_FLAGS"] = str(DEMO_FLAGS)
    environ["VWO_HEAP_OFFLINE_SEGMENTS"] = str(DEMO_SEGMENTS)
    kwargs: dict[str, Any] = {LOCATION[name][0]: LOCATION[name][1] for name in given}
    with caplog.at_level("INFO", logger="vwo_heap_middleware"):
        engines = [
            FlagEngine(Config.from_env(environ)),
            FlagEngine(Config(offline_flags=DEMO_FLAGS, offline_segments=DEMO_SEGMENTS, **kwargs)),
            FlagEngine.offline(offline_flags=DEMO_FLAGS, offline_segments=DEMO_SEGMENTS, **kwargs),
        ]
    try:
        for engine in engines:
            ada = visitor(engine.config, "ada@example.com")
            assert engine.decide(ada, ["premium_checkout"])["premium_checkout"].enabled
            assert engine.config.account_id == ("777" if "VWO_ACCOUNT_ID" in given else "123456")
            expected_key = "prod-key" if "VWO_SDK_KEY" in given else "local-demo-sdk-key"
            assert engine.config.sdk_key == expected_key
            if "VWO_GATEWAY_URL" in given:
                assert engine.config.gateway_url == "https://gateway.example.com"
            else:
                assert engine.config.gateway_url == OFFLINE_GATEWAY_URL
    finally:
        for engine in engines:
            engine.close()
    said = [r for r in caplog.records if r.msg == GATEWAY_NOT_CONTACTED]
    assert len(said) == (3 if "VWO_GATEWAY_URL" in given else 0), "once per engine"


@pytest.mark.parametrize("given", SUBSETS, ids=lambda names: "+".join(names) or "none")
def test_online_all_three_are_required(given: tuple[str, ...]) -> None:
    environ = {name: LOCATION[name][1] for name in given}
    missing = [name for name in LOCATION if name not in given]
    if not missing:
        assert Config.from_env(environ).account_id == "777"
        return
    with pytest.raises(ValueError, match=f"^{missing[0]} is not set: it is required"):
        Config.from_env(environ)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"account_id": "acct"}, "account_id must be your VWO account id"),
        ({"sdk_key": "  "}, "sdk_key must be the SDK key"),  # given, but blank
        ({"gateway_url": "ftp://x"}, "gateway_url must be an http:// or https:// URL"),
    ],
)
def test_offline_checks_what_is_given(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(offline_flags=DEMO_FLAGS, **kwargs)
