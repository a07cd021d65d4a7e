"""Crashes and cold starts (``make chaos``), with real servers and real signals.

- kill -9 under an outage: uvicorn (FastAPI) and gunicorn (Flask, 3 workers, ``--preload``)
  serve new visitors (each page causes one impression, then a purchase one conversion) with a
  state directory while the gateway refuses connections (or stalls each batch 3 s); workers and
  masters are SIGKILLed and the server restarted, several times; then the gateway answers. Every
  200 response's impression and every queued conversion reaches the gateway; what arrives twice
  is within what the recovery counted (at most the batch in flight per stopped process).
- Cold start during an outage: a server that loaded settings once, stopped, and started again
  with the gateway down decides from the kept revision (state dir, Redis, bootstrap file) on its
  first request, and its readiness says where they came from.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from examples.demo_setup import heap_cookie
from tests.support import DATA, ROOT, free_port, wait_until, wait_until_serving
from vwo_heap_middleware.evaluation.impressions import visitor_uuid
from vwo_heap_middleware.gateway.events import BATCH_SIZE
from vwo_heap_middleware.testing.gateway import LocalGateway

pytestmark = pytest.mark.chaos

ACCOUNT = "555"
UVICORN = "-m uvicorn tests.scripts.chaos_apps:app --port {port} --log-level warning"
GUNICORN = (
    "-m gunicorn tests.scripts.chaos_apps:app --bind 127.0.0.1:{port} --workers 3 "
    "--threads 4 --preload --log-level warning"
)
RECOVERED = "events a stopped process left in"
MAYBE_TWICE = re.compile(r"\((\d+) may be sent twice\)")


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DATA / "other_flags.toml") as gateway:
        yield gateway


class Server:
    """One of the example apps under uvicorn or gunicorn, restarted on a new port each time,
    its log kept across restarts."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command, self.env, self.log_path = command, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        command = [sys.executable, *self.command.format(port=port).split()]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{port}"
        wait_until_serving(self.process, self.url, in_a_row=5)

    def workers(self) -> list[int]:
        """The master's children (gunicorn's workers)."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(self.process.pid):
                found.append(int(entry.name))
        return found

    def kill_master(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process is not None:  # what a killed master left running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def health(self) -> dict[str, object]:
        http = urllib3.PoolManager(retries=False, timeout=5.0)
        return json.loads(http.request("GET", f"{self.url}/healthz").data)  # type: ignore[no-any-return]


class NewVisitors:
    """4 threads, each a new identity per page, then a purchase: the identities whose page was
    a 200, and those whose purchase was queued."""

    def __init__(self, server: Server, tag: str) -> None:
        self.server, self.tag = server, tag
        self.served: list[str] = []
        self.bought: list[str] = []
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(4)]

    def __enter__(self) -> NewVisitors:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def run(self, worker: int) -> None:
        http = urllib3.PoolManager(retries=False, timeout=5.0, maxsize=1)
        n = 0
        while not self.stop.is_set():
            n += 1
            who = f"{self.tag}-{worker}-{n}@example.net"
            try:
                response = http.request(
                    "GET", f"{self.server.url}/api/flags", headers={"Cookie": heap_cookie(who)}
                )
            except urllib3.exceptions.HTTPError:
                with self.lock:
                    self.failed += 1
                time.sleep(0.01)  # the server is down: do not spin
                continue
            if response.status == 200:
                assert json.loads(response.data)["flags"]["new_banner"]["enabled"], (
                    "decided from the kept settings while the gateway is down"
                )
                with self.lock:
                    self.served.append(who)
                self.buy(http, who)

    def buy(self, http: urllib3.PoolManager, who: str) -> None:
        try:
            response = http.request(
                "POST", f"{self.server.url}/purchase", headers={"Cookie": heap_cookie(who)}
            )
        except urllib3.exceptions.HTTPError:
            return  # killed between the page and the purchase: nothing was queued
        if response.status == 200:
            assert json.loads(response.data) == {"conversion": "queued"}, response.data
            with self.lock:
                self.bought.append(who)

    def served_at_least(self, count: int) -> bool:
        with self.lock:
            return len(self.served) >= count


def received(gateway: LocalGateway, name: str = "vwo_variationShown") -> collections.Counter[str]:
    """How many events ``name`` (impressions; ``purchase``: conversions) of each visitor (by
    VWO's visitor id) the gateway received."""
    log = gateway.records()["event_log"]
    return collections.Counter(
        event["body"]["d"]["visId"] for event in log if event["name"] == name
    )


def environment(gateway: LocalGateway, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "VWO_ACCOUNT_ID": ACCOUNT,
        "VWO_SDK_KEY": "examples-test-key",
        "VWO_GATEWAY_URL": gateway.url,
        "VWO_HEAP_FLAGS": "new_banner",
        "VWO_HEAP_FLUSH_TIMEOUT": "1",
        **more,
    }


KILLS = {
    "fastapi-uvicorn": ("fastapi", UVICORN, ["server", "server", "server"]),
    "flask-gunicorn": ("flask", GUNICORN, ["worker", "master", "worker", "master"]),
}


@pytest.mark.parametrize("outage", ["refusing", "slow"])
@pytest.mark.parametrize("name", sorted(KILLS))
def test_kill_9_under_an_outage_loses_no_impression(
    name: str, outage: str, gateway: LocalGateway, tmp_path: Path
) -> None:
    """``refusing``: nothing reaches the gateway until the end. ``slow``: it takes each batch
    and answers 3 s later, so a kill catches batches in flight (then sent twice, counted)."""
    app, command, kills = KILLS[name]
    env = environment(gateway, CHAOS_APP=app, VWO_HEAP_STATE_DIR=str(tmp_path / "state"))
    server = Server(command, env, tmp_path / "server.log")
    served: list[str] = []
    buyers: list[str] = []
    try:
        server.start()  # loads the settings once (and keeps them)
        if outage == "refusing":
            gateway.refuse_connections()
        else:
            gateway.faults.set("batch_events", latency=3.0)
        for round_, kill in enumerate(kills):
            with NewVisitors(server, f"{name}-{round_}") as visitors:
                wait_until(lambda: visitors.served_at_least(60), what="visitors served")
                if kill == "worker":
                    os.kill(server.workers()[0], signal.SIGKILL)  # gunicorn starts another
                    more = functools.partial(visitors.served_at_least, len(visitors.served) + 60)
                    wait_until(more, what="visitors served after the kill")
                else:
                    server.kill_master()
            served += visitors.served
            buyers += visitors.bought
            if kill != "worker":
                server.start()  # during an outage: from the kept settings
                source = "state_dir" if outage == "refusing" else "gateway"
                assert server.health()["settings_source"] == source
        server.stop()
        server.start()
        gateway.faults.clear()
        gateway.accept_connections()
        expected = {visitor_uuid(who, ACCOUNT) for who in served}
        bought = {visitor_uuid(who, ACCOUNT) for who in buyers}

        def arrived() -> bool:
            return expected <= set(received(gateway)) and bought <= set(
                received(gateway, "purchase")
            )

        try:
            wait_until(arrived, timeout=60, what="every impression and conversion")
        except AssertionError:
            lost = (expected - set(received(gateway))) | (
                bought - set(received(gateway, "purchase"))
            )
            who = [w for w in served if visitor_uuid(w, ACCOUNT) in lost]
            state = tmp_path / "state"
            where = {p.name: sum(p.read_text().count(v) for v in lost) for p in state.iterdir()}
            log = server.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{len(lost)} missing: {who}; in {where}\n{log}") from None
    finally:
        server.stop()
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    counts = [*received(gateway).values(), *received(gateway, "purchase").values()]
    twice = sum(count - 1 for count in counts)
    maybe = [int(n) for n in MAYBE_TWICE.findall(text)]  # per journal a stopped process left
    counted = sum(maybe)
    assert twice <= counted, f"{twice} arrived twice, only {counted} counted as maybe"
    assert max(maybe, default=0) <= BATCH_SIZE, "at most the batch in flight, per process"
    assert RECOVERED in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    print(
        f"kill -9 {name} ({outage}): {len(served)} served through {len(kills)} kills, "
        f"all {len(expected)} impressions and {len(bought)} conversions arrived, {twice} twice "
        f"({counted} counted as maybe)"
    )


@pytest.mark.parametrize("source", ["state_dir", "redis", "bootstrap"])
def test_a_cold_start_during_an_outage_decides_from_kept_settings(
    source: str, gateway: LocalGateway, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    more = {"CHAOS_APP": "fastapi"}
    if source == "state_dir":
        more["VWO_HEAP_STATE_DIR"] = str(tmp_path / "state")
    elif source == "redis":
        more["VWO_HEAP_REDIS_URL"] = request.getfixturevalue("redis_server").url
    else:
        exported = tmp_path / "settings.json"
        exported.write_bytes(gateway.app.settings_body)
        more["VWO_HEAP_BOOTSTRAP_SETTINGS"] = str(exported)
    server = Server(UVICORN, environment(gateway, **more), tmp_path / "server.log")
    try:
        if source != "bootstrap":
            server.start()
            assert server.health()["settings_source"] == "gateway"
            server.stop()
        gateway.refuse_connections()
        server.start()
        http = urllib3.PoolManager(retries=False, timeout=5.0)
        first = http.request(
            "GET", f"{server.url}/api/flags", headers={"Cookie": heap_cookie("new@example.net")}
        )
        health = server.health()
    finally:
        server.stop()
    banner = json.loads(first.data)["flags"]["new_banner"]
    assert banner["enabled"] and banner["reason"] == "targeted"
    assert health["settings_source"] == source and health["ready"]
    if source != "redis":  # (with Redis, the fleet's copy is fresh: no worker asks till it ages)
        assert health["last_error"], "it keeps trying the gateway"
