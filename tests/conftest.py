from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.context import RequestFacts, Visitor, build_visitor
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.gateway import LocalGateway, load_flags_file

# Properties are about what input does, not how fast: no per-example deadline on a busy machine.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

ROOT = Path(__file__).resolve().parent.parent
DEMO_FLAGS = ROOT / "examples" / "gateway" / "flags.toml"
DEMO_SEGMENTS = ROOT / "examples" / "gateway" / "segments.json"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def demo_gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS) as gateway:
        yield gateway


@pytest.fixture
def raw_gateway() -> Iterator[LocalGateway]:
    """Raw VWO settings (not a flags file) and CSV segments."""
    with LocalGateway.from_files(
        settings_file=DATA / "raw_settings.json", segments_file=DATA / "segments.csv"
    ) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def demo_settings() -> dict[str, object]:
    return load_flags_file(DEMO_FLAGS)


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll for a condition the code under test will reach; fail if it does not in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


EngineFactory = Callable[..., FlagEngine]


@pytest.fixture
def make_engine() -> Iterator[EngineFactory]:
    """Build started engines on a gateway; each is closed after the test."""
    engines: list[FlagEngine] = []

    def make(gateway: LocalGateway, *, ready: bool = True, **kwargs: Any) -> FlagEngine:
        settings = gateway.app.settings_body
        account = str(json.loads(settings)["accountId"])
        key = json.loads(settings).get("sdkKey", "any-key")
        config = Config(account_id=account, sdk_key=key, gateway_url=gateway.url, **kwargs)
        engine = FlagEngine(config)
        engines.append(engine)
        engine.start()
        if ready:
            wait_until(lambda: engine.ready, what="engine ready")
        return engine

    yield make
    for engine in engines:
        engine.close()


def visitor(config: Config, identity: str | None = None, **facts: Any) -> Visitor:
    return build_visitor(config, RequestFacts(identity_header=identity, **facts), request=None)
