"""Decide in a fresh process, optionally fork and decide in the child, then close.

Run by tests/test_engine.py: ``python -m tests.scripts.decide_then_fork GATEWAY_URL plain|fork``.
Prints one JSON line per step.
"""

from __future__ import annotations

import json
import os
import sys
import time

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.visitor import RequestFacts, build_visitor


def main(gateway_url: str, mode: str) -> None:
    config = Config(account_id="123456", sdk_key="local-demo-sdk-key", gateway_url=gateway_url)
    engine = FlagEngine(config)
    engine.start()
    engine.wait_ready(10.0)

    def decide(identity: str) -> str:
        visitor = build_visitor(config, RequestFacts(identity_header=identity), None)
        return engine.decide(visitor, ["premium_checkout"], timeout=5)["premium_checkout"].reason

    print(json.dumps({"parent": decide("ada@example.com")}), flush=True)
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            child = {"child": decide("grace@example.com"), "other": decide("bob@example.com")}
            print(json.dumps(child), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    engine.close()
    print(json.dumps({"closed": time.monotonic()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
