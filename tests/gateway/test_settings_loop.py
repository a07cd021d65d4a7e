"""The settings loop on its own: retries with back-off, refreshes, stops."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from vwo_heap_middleware.gateway.settings_loop import FIRST_RETRY, SETTINGS_FAILED, SettingsLoop


def test_a_failed_fetch_is_logged_and_retried_soon(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Any] = [ConnectionError("gateway down"), {"version": 1}]
    applied: list[dict[str, Any]] = []
    done = threading.Event()

    def fetch() -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    def apply(settings: dict[str, Any]) -> None:
        applied.append(settings)
        done.set()

    loop = SettingsLoop(fetch, apply, refresh=3600)
    loop.start()
    try:
        assert done.wait(5), "the retry came soon after the failure, not after the refresh"
    finally:
        loop.stop(1.0)
    assert applied == [{"version": 1}]
    assert SETTINGS_FAILED % ("ConnectionError: gateway down", FIRST_RETRY) in caplog.text
    assert loop.last_error is None, "cleared by the success"


def test_stop_ends_the_thread() -> None:
    fetched = threading.Event()

    def fetch() -> dict[str, Any]:
        fetched.set()
        return {}

    def settings_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "vwo-heap-settings"}

    others = settings_threads()  # other engines' (Django's process engine lives all session)
    loop = SettingsLoop(fetch, lambda settings: None, refresh=3600)
    loop.start()
    assert fetched.wait(5) and loop.running
    assert len(settings_threads() - others) == 1
    loop.stop(2.0)
    assert not {t for t in settings_threads() - others if t.is_alive()}
