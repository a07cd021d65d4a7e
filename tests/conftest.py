from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vwo_heap_middleware.gateway import LocalGateway, load_flags_file

ROOT = Path(__file__).resolve().parent.parent
DEMO_FLAGS = ROOT / "examples" / "gateway" / "flags.toml"
DEMO_SEGMENTS = ROOT / "examples" / "gateway" / "segments.json"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def demo_gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def demo_settings() -> dict[str, object]:
    return load_flags_file(DEMO_FLAGS)
