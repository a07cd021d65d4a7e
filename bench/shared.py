"""Gateway load per distinct visitor, with 1 and 4 workers, without Redis, with one Redis node
and with a 3-master Redis Cluster.

``python -m bench.shared`` (part of ``make bench``): gunicorn serves the Flask example with W
workers; each of 200 visitors asks for its flags 8 times over new connections (so every worker
may see them); the local gateway counts the membership lookups and impressions it received, and
the server's CPU time per request is measured. Prints one JSON object per row and writes them to
``bench/results/shared-<time>.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3

from examples.demo_setup import heap_cookie
from vwo_heap_middleware.testing.gateway import LocalGateway

from .load import cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
VISITORS = [f"v{n}@example.net" for n in range(200)]
REQUESTS_PER_VISITOR = 8
http = urllib3.PoolManager(retries=False, timeout=10.0)


def wait(url: str, seconds: float = 30.0) -> None:
    deadline, in_a_row = time.monotonic() + seconds, 0
    while in_a_row < 10:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not get ready")
        try:
            ok = http.request("GET", url, headers={"Connection": "close"}).status == 200
        except urllib3.exceptions.HTTPError:
            ok = False
        in_a_row = in_a_row + 1 if ok else 0
        time.sleep(0.02)


def run(workers: int, redis_url: str | None, topology: str = "") -> dict[str, Any]:
    with LocalGateway.from_files(
        flags_file=ROOT / "tests" / "data" / "hosts_flags.toml"
    ) as gateway:
        gateway.set_segments({"gold_list": VISITORS[::4]})
        port = free_port()
        env = {
            **os.environ,
            "VWO_ACCOUNT_ID": "555",
            "VWO_SDK_KEY": "examples-test-key",
            "VWO_GATEWAY_URL": gateway.url,
            "VWO_HEAP_FLAGS": "premium_checkout,checkout_color",
        }
        if redis_url:  # a prefix of its own: nothing left from an earlier run counts
            env.update(VWO_HEAP_REDIS_URL=redis_url, VWO_HEAP_REDIS_PREFIX=f"bench-{workers}")
        command = [
            *(sys.executable, "-m", "gunicorn", "examples.flask_app.app:app", "--preload"),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"),
        ]
        with subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL) as server:
            try:
                wait(f"http://127.0.0.1:{port}/healthz")
                cpu = cpu_seconds(server.pid)
                for _ in range(REQUESTS_PER_VISITOR):
                    for who in VISITORS:
                        headers = {"Cookie": heap_cookie(who), "Connection": "close"}
                        http.request("GET", f"http://127.0.0.1:{port}/api/flags", headers=headers)
                cpu = cpu_seconds(server.pid) - cpu
            finally:
                server.terminate()
                server.wait(15)  # the workers flush their impressions on the way out
        records = gateway.records()
    count = len(VISITORS)
    return {
        "workers": workers,
        "redis": topology or bool(redis_url),
        "cpu_us_per_request": round(cpu / (count * REQUESTS_PER_VISITOR) * 1e6),
        "membership_lookups_per_visitor": round(len(records["membership_lookups"]) / count, 2),
        "impressions_per_visitor": round(records["events"].get("vwo_variationShown", 0) / count, 2),
    }


@contextlib.contextmanager
def cluster(binary: str, directory: Path) -> Iterator[str]:
    """Three masters joined into a Redis Cluster; its ``redis+cluster://`` URL."""
    ports = [free_port() % 40000 + 10000 for _ in range(3)]  # the bus port (+10000) stays valid
    nodes = [
        subprocess.Popen(
            [
                binary,
                "--port",
                str(p),
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--cluster-config-file",
                f"nodes-{p}.conf",
            ],
            stdout=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        time.sleep(0.5)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(2.0)  # the nodes agree on the slots
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for node in nodes:
            node.kill()


def main() -> None:
    binary = shutil.which("redis-server")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        redis = None
        if binary:
            port = free_port()
            redis = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    directory,
                ],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        try:
            for workers in (1, 4):
                results.append(run(workers, None))
                if redis is not None:
                    results.append(run(workers, f"redis://127.0.0.1:{port}/0", "single"))
            if binary:
                with cluster(binary, Path(directory)) as url:
                    results.append(run(4, url, "cluster"))
        finally:
            if redis is not None:
                redis.kill()
    out = (
        ROOT / "bench" / "results" / f"shared-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for row in results:
        print(json.dumps(row))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
