"""What both example apps share: configuration from the environment, the demo gateway, JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vwo_heap_middleware import Config
from vwo_heap_middleware.request_flags import RequestFlags
from vwo_heap_middleware.testing.gateway import SAMPLES, LocalGateway

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
DEMO_FLAGS = SAMPLES / "flags.toml"  # the samples `--init` writes, shipped in the package
DEMO_SEGMENTS = SAMPLES / "segments.json"
DEMO_MEMBER = "ada@example.com"
_demo_gateway: list[LocalGateway] = []


def load_config() -> Config:
    """``Config.from_env()``; without ``VWO_GATEWAY_URL``, a local gateway serves the demo data."""
    environ = dict(os.environ)
    environ.setdefault("VWO_HEAP_FLAGS", "premium_checkout,new_banner")
    environ.setdefault("VWO_HEAP_CLIENT_FLAGS", "new_banner")  # the page's browser-side banner
    if "VWO_GATEWAY_URL" not in environ:
        gateway = LocalGateway.from_files(
            flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS
        ).start()
        _demo_gateway.append(gateway)
        print(
            f"VWO_GATEWAY_URL is not set: the demo data is served by a local gateway, {gateway.url}"
        )
        environ.update(
            VWO_GATEWAY_URL=gateway.url, VWO_ACCOUNT_ID="123456", VWO_SDK_KEY="local-demo-sdk-key"
        )
    return Config.from_env(environ)


def flags_payload(
    flags: RequestFlags, keys: tuple[str, ...], details: bool = False
) -> dict[str, Any]:
    """The ``/api/flags`` document: exactly the configured keys (``?details=1``: with each
    decision's details)."""
    return {
        "user_id": flags.user_id,
        "identity": flags.identity,
        "flags": {key: flags[key].to_dict(details=details) for key in keys},
    }


def heap_cookie(identity: str, app_id: str = "1") -> str:
    """A Heap v5 cookie as heap.js writes it once the page called ``heap.identify(identity)``."""
    document = {"userId": "4835702585115963", "sessionId": "1", "identity": identity}
    return f"_hp5_meta.{app_id}={quote(json.dumps(document, separators=(',', ':')))}"


def print_curl_lines(port: int) -> None:
    url = f"http://127.0.0.1:{port}/api/flags"
    print("A Heap segment member, then an anonymous visitor:")
    print(f"  curl -s --cookie '{heap_cookie(DEMO_MEMBER)}' {url}")
    print(f"  curl -s {url}")
