"""Fixtures of the gateway tests: a hand-moved clock and a thread pool."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest

from tests.support import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
        yield executor
