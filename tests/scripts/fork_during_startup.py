"""Fork while the settings thread may be setting the SDK up; the child must still get ready.

Run by tests/test_engine.py: ``python -m tests.scripts.fork_during_startup FLAGS_FILE``.
Prints the child's exit code: 0 when it got ready within 5 s.
"""

from __future__ import annotations

import os
import random
import sys
import time

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.testing.gateway import LocalGateway


def main(flags_file: str) -> None:
    gateway = LocalGateway.from_files(flags_file=flags_file).start()
    engine = FlagEngine(
        Config(account_id="123456", sdk_key="local-demo-sdk-key", gateway_url=gateway.url)
    )
    engine.start()
    time.sleep(random.uniform(0, 0.03))  # fork while the settings thread may be in vwo.init
    pid = os.fork()
    if pid == 0:
        os._exit(0 if engine.wait_ready(5.0) else 3)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
