from __future__ import annotations

import subprocess
import sys

import vwo_heap_middleware


def test_public_api_is_pinned() -> None:
    assert vwo_heap_middleware.__all__ == sorted(vwo_heap_middleware.__all__)
    assert vwo_heap_middleware.__all__ == [
        "Config",
        "FlagDecision",
        "FlagDefault",
        "FlagEngine",
        "FlagRequired",
        "HeapIdentity",
        "Reason",
        "RequestFacts",
        "RequestFlags",
        "Visitor",
        "build_visitor",
        "get_flags",
        "open_request",
        "open_request_async",
        "requires_flag",
    ]
    for name in vwo_heap_middleware.__all__:
        assert getattr(vwo_heap_middleware, name) is not None


def test_importing_the_core_imports_no_web_framework() -> None:
    code = (
        "import sys, vwo_heap_middleware, vwo_heap_middleware.engine; "
        "print(sorted(m for m in ('flask', 'starlette', 'fastapi', 'jinja2') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
