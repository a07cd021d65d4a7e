"""``make bench``: requests/s and latency per case, on real servers with a real load generator.

Cases, for Starlette on uvicorn, Flask on gunicorn, Django on uvicorn (``django``) and on
gunicorn (``django-wsgi``; A, C, D and R only) and a plain WSGI app on gunicorn (A, C, D, R and
G); one worker each, pinned to core 0; the load generator and the local gateway on core 1:

  A  bare       the same page without flags
  B  seed       a hand-written middleware calling the stock SDK's get_flag per flag per request
  C  returning  this middleware, returning visitors (100 identities, warm caches)
  CA aliasing   C with VWO_HEAP_ALIASING=true (a returning visitor asks nothing more)
  D  new        this middleware, a new identity on every request
  R  mix        this middleware, identities drawn Zipf(1.1) over 50,000 (the realistic mix)
  G  growthbook GrowthBook deciding the same two flags for R's visitors, from local features
  L  launchdarkly LaunchDarkly (TestData) deciding the same two flags for R's visitors
  E1 down       D while the gateway refuses connections
  E2 slow       D while the gateway answers membership lookups after 2 s

Rounds alternate between the cases; each figure is the median of its rounds. Besides req/s and
latency, each case reports the server's CPU time per request (all its processes) and the
impressions it made and the gateway received by the end of the case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import urllib3

from .load import Result, cpu_seconds, ensure_wrk, free_port, pinned, run_python, run_wrk

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
CASES = {
    "A": ("bare", "returning", None),
    "B": ("seed", "returning", None),
    "C": ("middleware", "returning", None),
    "CA": ("middleware", "returning", None),
    "D": ("middleware", "new", None),
    "R": ("middleware", "zipf", None),
    "G": ("growthbook", "zipf", None),
    "L": ("launchdarkly", "zipf", None),
    "E1": ("middleware", "new", "down"),
    "E2": ("middleware", "new", "slow"),
}
CASE_ENV = {"CA": {"VWO_HEAP_ALIASING": "true"}}  # a case's own settings
SERVERS = {
    "starlette": [
        "-m",
        "uvicorn",
        "bench.apps:starlette",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--no-access-log",
    ],
    "django": [
        "-m",
        "uvicorn",
        "bench.django_site:application",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--no-access-log",
    ],
    "flask": [
        "-m",
        "gunicorn",
        "bench.apps:flask",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--log-level",
        "warning",
    ],
}
# Plain WSGI (HeapFlagsWSGIMiddleware) and Django's WSGI stack on gunicorn, as Flask is.
for name, app in (("wsgi", "bench.apps:wsgi"), ("django-wsgi", "bench.django_site:application")):
    SERVERS[name] = [app if part == "bench.apps:flask" else part for part in SERVERS["flask"]]
# Django is measured bare and with the middleware: its own cost, not again against the peers;
# plain WSGI beside GrowthBook.
FRAMEWORK_CASES = {
    "django": ("A", "C", "D", "R"),
    "django-wsgi": ("A", "C", "D", "R"),
    "wsgi": ("A", "C", "D", "R", "G"),
}
SERVER_CORE, LOAD_CORE = 0, 1
# The harness's own requests (stats, /gc, faults) retry a kept-alive connection the server had
# just closed as idle (uvicorn's keep-alive is 5 s); redirects are not followed.
http = urllib3.PoolManager(retries=urllib3.Retry(total=2, redirect=0), timeout=5.0)


def wait_for(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if http.request("GET", url).status == 200:
                return
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def start(
    command: list[str], core: int | None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        pinned([sys.executable, *command], core),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--gc-freeze", action="store_true", help="servers call gc.freeze() once ready"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--frameworks", default="starlette,flask,django,django-wsgi,wsgi")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator")
    parser.add_argument("--no-micro", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    frameworks = args.frameworks.split(",")
    cases = args.cases.split(",")
    wrk = None if args.python_load else ensure_wrk()
    print(f"load generator: {'wrk' if wrk else 'python (wrk not available)'}", flush=True)

    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway = start(
        [
            "-m",
            "vwo_heap_middleware.testing.gateway",
            "--flags",
            str(HERE / "flags.toml"),
            "--segments",
            str(HERE / "segments.json"),
            "--port",
            str(gateway_port),
            "--enable-control",
            "--quiet",
        ],
        LOAD_CORE,
    )
    servers: list[subprocess.Popen[bytes]] = []
    pids: dict[tuple[str, str], int] = {}
    cases_of = {f: [c for c in cases if c in FRAMEWORK_CASES.get(f, CASES)] for f in frameworks}
    rounds: dict[str, dict[str, list[Result]]] = {
        f: {c: [] for c in cases_of[f]} for f in frameworks
    }
    try:
        wait_for(f"{gateway_url}/_gateway/health")
        urls: dict[tuple[str, str], str] = {}
        for framework in frameworks:
            for case in cases_of[framework]:
                port = free_port()
                env = {
                    **os.environ,
                    "BENCH_FRAMEWORK": framework,
                    "BENCH_CASE": CASES[case][0],
                    "VWO_ACCOUNT_ID": "123456",
                    "VWO_SDK_KEY": "bench-sdk-key",
                    "VWO_GATEWAY_URL": gateway_url,
                    "VWO_HEAP_FLAGS": "premium_checkout,new_banner",
                    **CASE_ENV.get(case, {}),
                    **({"BENCH_GC_FREEZE": "1"} if args.gc_freeze else {}),
                }
                command = [part.format(port=port) for part in SERVERS[framework]]
                servers.append(start(command, SERVER_CORE, env))
                pids[framework, case] = servers[-1].pid
                urls[framework, case] = f"http://127.0.0.1:{port}"
        for (_, case), url in urls.items():
            wait_for(f"{url}/healthz")
            warm = CASES[case][1]  # one second of the case's own traffic, not measured
            if wrk:
                run_wrk(wrk, url + "/", 1, args.connections, warm, LOAD_CORE)
            else:
                run_python(url + "/", 1, args.connections, warm)
        for number in range(args.rounds):
            for framework in frameworks:
                for case in cases_of[framework]:
                    _, traffic, fault = CASES[case]
                    url = urls[framework, case]
                    made, received = events_made(url), events_received(gateway_url)
                    cpu = cpu_seconds(pids[framework, case])
                    gc_pauses(url)  # from here on
                    set_fault(gateway_url, fault, args.seconds)
                    try:
                        result = (
                            run_wrk(
                                wrk, url + "/", args.seconds, args.connections, traffic, LOAD_CORE
                            )
                            if wrk
                            else run_python(url + "/", args.seconds, args.connections, traffic)
                        )
                    finally:
                        clear_fault(gateway_url, fault)
                    cpu = cpu_seconds(pids[framework, case]) - cpu
                    result.cpu_us = cpu / max(result.requests, 1) * 1e6
                    result.gc = gc_pauses(url)
                    drain(url)  # the case ends when its impressions are delivered
                    settle(gateway_url)
                    result.impressions = events_made(url) - made
                    result.delivered = events_received(gateway_url) - received
                    rounds[framework][case].append(result)
                    print(
                        f"round {number + 1} {framework:9} {case:3} {result.rps:9.0f} req/s  "
                        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                        f"cpu {result.cpu_us:6.0f} us/req  "
                        f"gc longest {(result.gc or {}).get('longest_ms', 0):.1f} ms  "
                        f"events {result.delivered}/{result.impressions}  errors {result.errors}",
                        flush=True,
                    )
        micro = {} if args.no_micro else run_micro(gateway_url)
    finally:
        for process in [*servers, gateway]:
            process.terminate()
        for process in [*servers, gateway]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    report = summarise(rounds, micro, args, "wrk" if wrk else "python")
    write(report, args.out)
    return 0


def set_fault(gateway_url: str, fault: str | None, seconds: float) -> None:
    if fault == "down":
        http.request("POST", f"{gateway_url}/_gateway/refuse?seconds={seconds + 1.5:g}")
        time.sleep(0.2)  # the gateway closes its listener 50 ms after answering
    elif fault == "slow":
        for endpoint in ("check_attribute", "user_details"):
            http.request(
                "POST",
                f"{gateway_url}/_gateway/faults",
                json={"endpoint": endpoint, "latency": 2.0},
            )


def clear_fault(gateway_url: str, fault: str | None) -> None:
    if fault == "down":
        wait_for(f"{gateway_url}/_gateway/health", 30.0)
    elif fault == "slow":
        http.request("DELETE", f"{gateway_url}/_gateway/faults")


def gc_summary(pauses: list[dict[str, float]]) -> dict[str, float]:
    """A case's collector pauses over its rounds: counts and total summed, longest the max."""
    return {
        "gc_pauses": sum(p["count"] for p in pauses),
        "gc_ms": round(sum(p["total_ms"] for p in pauses), 1),
        "gc_longest_ms": round(max((p["longest_ms"] for p in pauses), default=0), 2),
        "gc_full": sum(p["full"] for p in pauses),
        "gc_full_longest_ms": round(max((p["full_ms"] for p in pauses), default=0), 2),
    }


def gc_pauses(url: str) -> dict[str, float]:
    """The server's collector pauses since the last call (``/gc`` reads and resets them)."""
    return dict(http.request("GET", f"{url}/gc").json())


def events_made(url: str) -> int:
    """Events (impressions) a server's engine made so far: sent, waiting or dropped."""
    stats = http.request("GET", f"{url}/stats").json()
    return sum(stats.get(k, 0) for k in ("events_sent", "events_queued", "events_dropped"))


def drain(url: str, limit: float = 120.0) -> None:
    """Wait until the server has no events waiting to be sent (after an outage: retried)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if http.request("GET", f"{url}/stats").json().get("events_queued", 0) == 0:
            return
        time.sleep(0.1)


def events_received(gateway_url: str) -> int:
    records = http.request("GET", f"{gateway_url}/_gateway/records?summary").json()
    return int(sum(records["events"].values()))


def settle(gateway_url: str, quiet: float = 1.0, limit: float = 60.0) -> None:
    """Wait until no server is still sending queued events, so the next case runs alone."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            count = sum(
                http.request("GET", f"{gateway_url}/_gateway/records?summary")
                .json()["requests"]
                .values()
            )
        except (urllib3.exceptions.HTTPError, ValueError):
            count = -1
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)


def run_micro(gateway_url: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.micro", gateway_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def summarise(
    rounds: dict[str, dict[str, list[Result]]], micro: dict[str, float], args: Any, tool: str
) -> dict[str, Any]:
    figures: dict[str, dict[str, dict[str, float]]] = {}
    ratios: dict[str, dict[str, float]] = {}
    for framework, by_case in rounds.items():
        figures[framework] = {
            case: {
                "rps": statistics.median(r.rps for r in results),
                "p50_ms": statistics.median(r.p50_ms for r in results),
                "p99_ms": statistics.median(r.p99_ms for r in results),
                "errors": sum(r.errors for r in results),
                "cpu_us": statistics.median(r.cpu_us for r in results),
                "impressions": sum(r.impressions for r in results),
                "delivered": sum(r.delivered for r in results),
                **gc_summary([r.gc for r in results if r.gc]),
            }
            for case, results in by_case.items()
            if results
        }
        f = figures[framework]

        ratios[framework] = {
            f"{a}/{b}": _ratio(f, a, b) for a, b in (("C", "A"), ("D", "A"), ("C", "B"))
        }
        for case in ("C", "CA", "D", "R", "G", "L"):  # the issues' measure: bare CPU / case
            if case in f and "A" in f and f[case]["cpu_us"]:
                ratios[framework][f"cpu A/{case}"] = round(f["A"]["cpu_us"] / f[case]["cpu_us"], 3)
        if "C" in f and "A" in f and f["A"]["p99_ms"]:
            ratios[framework]["p99 C/A"] = round(f["C"]["p99_ms"] / f["A"]["p99_ms"], 2)
        for e in ("E1", "E2"):
            if e in f and "D" in f:
                ratios[framework][f"{e} p99 - D p99 (ms)"] = round(
                    f[e]["p99_ms"] - f["D"]["p99_ms"], 1
                )
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "method": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
            "load_generator": tool,
            "cases": {c: CASES[c] for c in args.cases.split(",")},
        },
        "figures": figures,
        "ratios": ratios,
        "micro_us": micro,
        "rounds": {
            f: {c: [asdict(r) for r in rs] for c, rs in by.items()} for f, by in rounds.items()
        },
    }


def _ratio(figures: dict[str, dict[str, float]], a: str, b: str) -> float:
    if a in figures and b in figures and figures[b]["rps"]:
        return round(figures[a]["rps"] / figures[b]["rps"], 3)
    return float("nan")


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "").replace("-", "")
    path = out / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    chart = chart_png(report, out / f"bench-{stamp}.png")
    print(f"results: {path}" + (f", chart: {chart}" if chart else ""))
    for framework, figures in report["figures"].items():
        for case, figure in figures.items():
            print(
                f"{framework:9} {case:3} {figure['rps']:9.0f} req/s  "
                f"p50 {figure['p50_ms']:7.2f} ms  p99 {figure['p99_ms']:7.2f} ms  "
                f"cpu {figure['cpu_us']:6.0f} us/req  events {figure['delivered']}/"
                f"{figure['impressions']}  gc {figure['gc_pauses']} pauses "
                f"{figure['gc_ms']} ms, longest {figure['gc_longest_ms']} ms, "
                f"full {figure['gc_full']} (longest {figure['gc_full_longest_ms']} ms)"
            )
    if report["micro_us"]:
        print("micro (us): " + ", ".join(f"{k} {v}" for k, v in report["micro_us"].items()))
    print(
        " | ".join(
            f"{framework}: "
            + " ".join(f"{k}={v}" for k, v in ratios.items() if "/" in k and "(ms)" not in k)
            for framework, ratios in report["ratios"].items()
        )
    )


def chart_png(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    frameworks = list(report["figures"])
    cases = sorted({c for f in frameworks for c in report["figures"][f]})
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(frameworks), 1)
    for index, framework in enumerate(frameworks):
        figures = report["figures"][framework]
        xs = [n + index * width for n in range(len(cases))]
        axes[0].bar(xs, [figures.get(c, {}).get("rps", 0) for c in cases], width, label=framework)
        axes[1].bar(
            xs, [figures.get(c, {}).get("p99_ms", 0) for c in cases], width, label=framework
        )
    for axis, title in zip(
        axes, ("requests/s (higher is better)", "p99 latency, ms (lower is better)"), strict=True
    ):
        axis.set_xticks([n + width * (len(frameworks) - 1) / 2 for n in range(len(cases))], cases)
        axis.set_title(title)
        axis.legend()
    axes[1].set_yscale("log")
    figure.suptitle(
        "A bare, B seed recipe, C returning, D new, R mix, G GrowthBook, L LaunchDarkly, "
        "E1 down, E2 slow"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    sys.exit(main())
