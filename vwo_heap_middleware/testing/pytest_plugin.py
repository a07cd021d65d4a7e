"""The pytest plugin (registered through the package's ``pytest11`` entry point).

Fixtures:

- ``flag_overrides``: ``flag_overrides.set("key", enabled=True, variables={...})`` forces a flag
  for the rest of the test, in every engine of the process; cleared after each test.
- ``flag_engine``: an offline ``FlagEngine`` from the flags file named by the ini option
  ``vwo_heap_flags`` (and ``vwo_heap_segments``), or ``VWO_HEAP_OFFLINE_FLAGS`` /
  ``VWO_HEAP_OFFLINE_SEGMENTS``; ready at once, no network.

Harmless when unused: importing it imports no web framework and starts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import FlagOverrides

if TYPE_CHECKING:
    from ..engine import FlagEngine

NO_FLAGS_FILE = (
    "the flag_engine fixture needs a flags file: set the ini option vwo_heap_flags "
    "(or VWO_HEAP_OFFLINE_FLAGS) to your flags TOML or VWO settings JSON"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "vwo_heap_flags", "flags TOML or VWO settings JSON for the flag_engine fixture", default=""
    )
    parser.addini(
        "vwo_heap_segments", "Heap segments (JSON or CSV) for the flag_engine fixture", default=""
    )


@pytest.fixture
def flag_overrides() -> Iterator[FlagOverrides]:
    """Force flags for this test: ``flag_overrides.set(key, enabled=..., variables=...)``."""
    overrides = FlagOverrides()
    try:
        yield overrides
    finally:
        overrides.close()


@pytest.fixture
def flag_engine(pytestconfig: pytest.Config) -> Iterator[FlagEngine]:
    """An offline engine from the project's flags file, started and ready."""
    from ..engine import FlagEngine

    flags = _path(pytestconfig, "vwo_heap_flags", "VWO_HEAP_OFFLINE_FLAGS")
    if flags is None:
        raise pytest.UsageError(NO_FLAGS_FILE)
    segments = _path(pytestconfig, "vwo_heap_segments", "VWO_HEAP_OFFLINE_SEGMENTS")
    engine = FlagEngine.offline(offline_flags=flags, offline_segments=segments)
    engine.start()
    try:
        yield engine
    finally:
        engine.close()


def _path(config: pytest.Config, option: str, variable: str) -> Path | None:
    value = str(config.getini(option) or os.environ.get(variable, "")).strip()
    return config.rootpath / value if value else None
