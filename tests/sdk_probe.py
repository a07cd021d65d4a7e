"""Ask the stock VWO SDK for decisions in a fresh process, and print them as JSON.

The SDK keeps non-daemon timers alive and holds process-wide singletons, so tests that check
the raw SDK against the local gateway run it here, in a subprocess that exits hard.
Usage: python -m tests.sdk_probe URL ACCOUNT SDK_KEY '[["flag", {context}], ...]' [--aliasing]
A call ``["@alias", user_id, alias_id]`` is the SDK's ``set_alias`` (with ``--aliasing``: the
SDK's ``is_aliasing_enabled``); its answer is ``{"alias_set": bool}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def probe(url: str, account: str, sdk_key: str, calls: list[Any], aliasing: bool = False) -> Any:
    """Run this module in a subprocess and return its decoded JSON answer."""
    flags = ["--aliasing"] if aliasing else []
    done = subprocess.run(
        [sys.executable, "-m", "tests.sdk_probe", url, account, sdk_key, json.dumps(calls), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import vwo

    url, account, sdk_key, calls = sys.argv[1:5]
    client = vwo.init(
        {
            "account_id": account,
            "sdk_key": sdk_key,
            "gateway_service": {"url": url},
            "logger": {"level": "ERROR"},
            "is_aliasing_enabled": "--aliasing" in sys.argv[5:],
        }
    )
    answers: list[dict[str, Any]] = []
    for flag, *args in json.loads(calls):
        if flag == "@alias":
            answers.append({"alias_set": client.set_alias(*args)})
            continue
        decision = client.get_flag(flag, args[0])
        variables = {v["key"]: v["value"] for v in decision.get_variables()}
        answers.append({"enabled": decision.is_enabled(), "variables": variables})
    print(json.dumps({"settings_loaded": client.original_settings is not None, "answers": answers}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
