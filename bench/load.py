"""Load generators: wrk (installed when missing, where apt can), or a Python fallback."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0 Safari/537.36"
)
RETURNING = 100  # returning visitors cycle through this many identities

WRK_SCRIPT = """
counter = 0
tid = 0
function setup(thread)
  tid = tid + 1
  thread:set("tid", tid)
end
function init(args)
  math.randomseed(os.time() + (tid or 0))
end
function request()
  counter = counter + 1
  local id
  if os.getenv("BENCH_TRAFFIC") == "new" then
    id = "new-" .. tid .. "-" .. counter .. "-" .. math.random(1000000000) .. "@example.com"
  else
    id = "ret-" .. (counter % RETURNING) .. "@example.com"
  end
  return wrk.format("GET", "/", {["X-Heap-Identity"] = id, ["User-Agent"] = "USER_AGENT"})
end
""".replace("RETURNING", str(RETURNING)).replace("USER_AGENT", USER_AGENT)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str


def ensure_wrk() -> str | None:
    """wrk's path; installs Debian's wrk when missing and apt-get is usable; None otherwise."""
    found = shutil.which("wrk")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    for command in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        subprocess.run(command, capture_output=True, timeout=300, check=False)
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


def pinned(command: list[str], core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        return command
    return ["taskset", "-c", str(core), *command]


def run_wrk(
    wrk: str, url: str, seconds: float, connections: int, traffic: str, core: int | None
) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        done = subprocess.run(
            pinned(
                [
                    wrk,
                    "-t1",
                    f"-c{connections}",
                    f"-d{max(int(seconds), 1)}s",
                    "--latency",
                    "-s",
                    script.name,
                    url,
                ],
                core,
            ),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
            env={**os.environ, "BENCH_TRAFFIC": traffic},
        )
    finally:
        Path(script.name).unlink()
    return parse_wrk(done.stdout)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> Result:
    def latency(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not found:
            raise ValueError(f"wrk printed no {percent}% latency:\n{output}")
        return float(found.group(1)) * _UNITS[found.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = sum(
        int(n)
        for n in re.findall(
            r"(?:Non-2xx or 3xx responses:|timeout|read|write|connect) (\d+)", output
        )
    )
    if not rps:
        raise ValueError(f"wrk printed no Requests/sec:\n{output}")
    return Result(float(rps.group(1)), latency("50"), latency("99"), errors, "wrk")


def run_python(url: str, seconds: float, connections: int, traffic: str) -> Result:
    """A keep-alive HTTP/1.1 load generator in asyncio: slower than wrk, but always there."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    latencies: list[float] = []
    errors = 0
    counter = 0

    async def connection() -> None:
        nonlocal errors, counter
        reader, writer = await asyncio.open_connection(host, int(port))
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                counter += 1
                identity = (
                    f"new-{counter}-{random.randrange(10**9)}"
                    if traffic == "new"
                    else f"ret-{counter % RETURNING}"
                ) + "@example.com"
                request = (
                    f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Heap-Identity: {identity}\r\n"
                    f"User-Agent: {USER_AGENT}\r\n\r\n"
                ).encode()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append((time.perf_counter() - started) * 1000)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    async def main() -> float:
        started = time.monotonic()
        await asyncio.gather(*(connection() for _ in range(connections)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    return Result(
        rps=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0,
        errors=errors,
        tool="python",
    )
