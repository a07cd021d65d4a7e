"""`make bench` is not part of the suite; this checks that it runs, for a second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.load import parse_wrk
from tests.support import ROOT

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%    1.13ms
     75%    1.30ms
     90%    1.50ms
     99%  812.00us
  127000 requests in 5.00s, 20.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  25400.12
Transfer/sec:      4.00MB
"""


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert (result.rps, result.p50_ms, result.p99_ms, result.errors) == (25400.12, 1.13, 0.812, 12)


def test_bench_runs_for_a_second(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--frameworks",
            "starlette,django,django-wsgi,wsgi",
            "--cases",
            "A,C",
            "--python-load",
            "--no-micro",
            "--connections",
            "4",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    figures = report["figures"]["starlette"]
    assert figures["A"]["rps"] > 0 and figures["C"]["rps"] > 0
    assert figures["C"]["errors"] == 0
    assert {"gc_pauses", "gc_longest_ms", "gc_full_longest_ms"} <= set(figures["C"])
    assert set(report["figures"]["django"]) == {"A", "C"}
    assert report["figures"]["django"]["C"]["errors"] == 0
    assert set(report["figures"]["wsgi"]) == set(report["figures"]["django-wsgi"]) == {"A", "C"}
    assert report["figures"]["django-wsgi"]["C"]["errors"] == 0
    assert (
        report["figures"]["wsgi"]["C"]["errors"] == 0 and report["figures"]["wsgi"]["C"]["rps"] > 0
    )
    assert next(tmp_path.glob("bench-*.png")).stat().st_size > 0
    last = done.stdout.strip().splitlines()[-1]
    assert (
        last.startswith("starlette: C/A=") and " | django: C/A=" in last and " | wsgi: C/A=" in last
    )
