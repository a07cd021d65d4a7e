"""Headless Chromium (Debian's, driven by Playwright) and VWO's web SDK from npm: both put in
place by ``make test`` (``make browser``); where they cannot be, these tests are skipped and say
why."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

CHROMIUM = os.environ.get("VWO_HEAP_CHROMIUM") or shutil.which("chromium")
WEB_SDK = ROOT / ".venv" / "npm" / "package" / "dist" / "client" / "vwo-fme-javascript-sdk.js"
# As this machine's kind starts Chromium: no sandbox (root), nothing reaching out on its own.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")  # Playwright's sync API runs a loop: gone before other tests
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (make test installs Debian's chromium as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def web_sdk() -> Path:
    if not WEB_SDK.is_file():
        pytest.skip("VWO's web SDK is not in .venv/npm (make browser fetches it from npm)")
    return WEB_SDK
