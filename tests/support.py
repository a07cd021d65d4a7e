"""What the tests share besides fixtures: paths, demo data, helpers that build visitors and wait
for servers, and a real redis-server a test can stop and start. Fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.testing.gateway import SAMPLES, LocalGateway
from vwo_heap_middleware.visitor import RequestFacts, Visitor, build_visitor

ROOT = Path(__file__).resolve().parent.parent
DEMO_FLAGS = SAMPLES / "flags.toml"
DEMO_SEGMENTS = SAMPLES / "segments.json"
DATA = Path(__file__).resolve().parent / "data"

EngineFactory = Callable[..., FlagEngine]
"""``make_engine(gateway, ready=True, **config)``: a started engine, closed after the test."""


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a certificate for 127.0.0.1 signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def gateway_env(gateway: LocalGateway | None, **extra: str) -> dict[str, str]:
    """This process's environment without VWO's and Heap's variables, then the demo account
    on ``gateway`` (a command line configured as an app would be)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VWO_", "HEAP_"))}
    if gateway is not None:
        env.update(
            VWO_ACCOUNT_ID="123456", VWO_SDK_KEY="local-demo-sdk-key", VWO_GATEWAY_URL=gateway.url
        )
    return {**env, **extra}


def heap_identity_for_tests(request: object) -> str | None:
    """A resolver named by dotted path in configuration tests."""
    return None


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll for a condition the code under test will reach; fail if it does not in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def wait_until_serving(process: subprocess.Popen[bytes], url: str, in_a_row: int = 10) -> None:
    """Poll ``url``/healthz over new connections until ``in_a_row`` ready answers (so every
    worker of a forking server has loaded its settings); fail if the server dies first."""
    pool = urllib3.PoolManager(retries=False, timeout=5.0)
    streak = [0]

    def serving() -> bool:
        if process.poll() is not None:
            said = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(f"the server died at start-up: {said}")
        try:
            response = pool.request("GET", f"{url}/healthz", headers={"Connection": "close"})
            ok = response.status == 200
        except urllib3.exceptions.HTTPError:
            ok = False
        streak[0] = streak[0] + 1 if ok else 0
        return streak[0] >= in_a_row

    wait_until(serving, timeout=30.0, what=f"{url} to serve")


def visitor(config: Config, identity: str | None = None, **facts: Any) -> Visitor:
    return build_visitor(config, RequestFacts(identity_header=identity, **facts), request=None)


def v4(identity: str | None, user_id: str | None = "4835702585115963", app: str = "1234") -> str:
    document = {
        "userId": user_id,
        "pageviewId": "2936475930128745",
        "sessionId": "7725938861927450",
        "identity": identity,
        "trackerVersion": "4.0",
        "identityField": None,
        "isIdentified": 1 if identity else 0,
    }
    return f"_hp2_id.{app}={quote(json.dumps(document, separators=(',', ':')))}"


def v5(identity: str | None, user_id: str = "0012345678901234", app: str = "1234") -> str:
    document: dict[str, object] = {
        "userId": user_id,
        "sessionId": "3859385729357291",
        "sessionProperties": {"utm_source": "newsletter", "time": 1732800000000},
        "lastEventTime": 1732800123456,
    }
    if identity is not None:
        document["identity"] = identity
    return f"_hp5_meta.{app}={quote(json.dumps(document, separators=(',', ':')))}"


BREAKS_SIMPLECOOKIE = 'tracking={"a":1}; pref=dark mode; quote=a"b'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SHOP = {
    "account_id": 777,
    "sdk_key": "shop-key",
    "flags": [
        {
            "key": "premium_checkout",
            "variables": {"tier_label": "Standard"},
            "rules": [
                {
                    "type": "heap_segment",
                    "segment": "vip",
                    "variables": {"tier_label": "<b>Gold</b>"},
                }
            ],
        },
        {
            "key": "new_banner",
            "variables": {"text": "Hi"},
            "rules": [{"type": "everyone", "variables": {"text": "<script>alert(1)</script>"}}],
        },
    ],
}
MEMBER = {"X-Heap-Identity": "vip@example.com"}

REDIS_MISSING = (
    "redis-server is not installed: `make test` installs it with apt-get where it can "
    "(Debian package redis-server); these tests need a real Redis"
)


class RedisServer:
    """A real redis-server on a free port, that a test can stop and start again."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10, what="redis-server to answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class Clock:
    """A clock a test moves by hand (``clock.now += 61``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


T = TypeVar("T")


def run_counting_ticks(work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """Await ``work()`` on a new event loop beside a task that ticks every 10 ms: the ticks say
    whether the loop kept serving other tasks meanwhile."""

    async def main() -> tuple[T, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            return await work(), ticks
        finally:
            task.cancel()

    return asyncio.run(main())
