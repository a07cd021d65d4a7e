"""``make stress``: the concurrency, burst, chaos and crash tests, each run ``STRESS_COUNT``
times (20) beside a CPU-bound process, as CI machines and laptops are loaded. A verdict that
depends on an idle machine fails here first."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

TESTS = [
    "tests/gateway/test_cached_lookup.py",
    "tests/gateway/test_lookups.py",
    "tests/gateway/test_loop.py",
    "tests/gateway/test_aliases.py",
    "tests/gateway/test_settings_loop.py",
    "tests/state/test_journal.py",
    "tests/test_engine.py::test_sixteen_threads_mixed_users_no_wrong_decision",
    "tests/test_engine.py::test_one_identity_many_requests_one_lookup",
    "tests/test_wsgi.py",
    "tests/test_chaos.py",
    "tests/test_crash_recovery.py",
    "tests/test_redis_failover.py",
]


def burn() -> None:
    while True:
        pass


def main() -> int:
    count = int(os.environ.get("STRESS_COUNT", "20"))
    hog = multiprocessing.Process(target=burn, daemon=True)
    hog.start()
    try:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        return subprocess.call([*command, f"--count={count}", *TESTS, *sys.argv[1:]])
    finally:
        hog.kill()


if __name__ == "__main__":
    sys.exit(main())
