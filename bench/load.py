"""Load generators: wrk (installed when missing, where apt can), or a Python fallback."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import random
import re
import shutil
import socket
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
ZIPF_IDS, ZIPF_S = 50_000, 1.1  # the realistic mix: identities drawn Zipf(1.1) over 50,000

WRK_SCRIPT = """
counter = 0
tid = 0
function setup(thread)
  tid = tid + 1
  thread:set("tid", tid)
end
cdf = nil
function init(args)
  math.randomseed(os.time() + (tid or 0))
  if os.getenv("BENCH_TRAFFIC") == "zipf" then
    cdf = {}
    local total = 0
    for k = 1, ZIPF_IDS do
      total = total + 1 / (k ^ ZIPF_S)
      cdf[k] = total
    end
    for k = 1, ZIPF_IDS do cdf[k] = cdf[k] / total end
  end
end
function zipf()
  local u, lo, hi = math.random(), 1, ZIPF_IDS
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end
function request()
  counter = counter + 1
  local id
  local traffic = os.getenv("BENCH_TRAFFIC")
  if traffic == "new" then
    id = "new-" .. tid .. "-" .. counter .. "-" .. math.random(1000000000) .. "@example.com"
  elseif traffic == "zipf" then
    -- rank k to a scrambled identity, so the segment's members (ret-0..49) are spread out
    id = "ret-" .. ((zipf() * 7919) % ZIPF_IDS) .. "@example.com"
  else
    id = "ret-" .. (counter % RETURNING) .. "@example.com"
  end
  return wrk.format("GET", "/", {["X-Heap-Identity"] = id, ["User-Agent"] = "USER_AGENT"})
end
""".replace("RETURNING", str(RETURNING)).replace("USER_AGENT", USER_AGENT)
WRK_SCRIPT = WRK_SCRIPT.replace("ZIPF_IDS", str(ZIPF_IDS)).replace("ZIPF_S", str(ZIPF_S))


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    requests: int = 0
    cpu_us: float = 0.0  # the server's CPU time per request (every process of it)
    impressions: int = 0  # vwo_variationShown events the server made during the case
    delivered: int = 0  # ... and the gateway received by the end of the case
    gc: dict[str, float] | None = None  # the server's collector pauses during the case


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    count = re.search(r"(\d+) requests in", output)
    if not rps or not count:
        raise ValueError(f"wrk printed no Requests/sec:\n{output}")
    result = Result(float(rps.group(1)), latency("50"), latency("99"), errors, "wrk")
    result.requests = int(count.group(1))
    return result


def zipf_identity(draw: float, cdf: list[float]) -> str:
    """The Python generator's twin of the wrk script's Zipf draw."""
    rank = bisect.bisect_left(cdf, draw) + 1
    return f"ret-{(rank * 7919) % ZIPF_IDS}@example.com"


def zipf_cdf() -> list[float]:
    weights = list(itertools.accumulate(1 / k**ZIPF_S for k in range(1, ZIPF_IDS + 1)))
    return [w / weights[-1] for w in weights]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (a gunicorn master's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            pending += [
                int(child)
                for task in Path(f"/proc/{current}/task").iterdir()
                for child in (task / "children").read_text().split()
            ]
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_python(url: str, seconds: float, connections: int, traffic: str) -> Result:
    """A keep-alive HTTP/1.1 load generator in asyncio: slower than wrk, but always there."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    latencies: list[float] = []
    errors = 0
    counter = 0
    cdf = zipf_cdf() if traffic == "zipf" else []

    async def connection() -> None:
        nonlocal errors, counter
        reader, writer = await asyncio.open_connection(host, int(port))
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                counter += 1
                if traffic == "zipf":
                    identity = zipf_identity(random.random(), cdf)
                else:
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
        requests=len(latencies),
    )
