from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

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


def test_importing_registers_nothing_process_wide() -> None:
    listing = (
        "import sys, vwo_heap_middleware.engine, vwo_heap_middleware.request_flags; "
        "print(' '.join(m for m in sys.modules if not m.startswith('vwo_heap_middleware')))"
    )
    modules = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, check=True
    ).stdout.split()
    importable = [m for m in modules if m.isidentifier() or "." in m]
    code = (
        "import importlib, atexit, os, threading\n"
        f"for name in {importable!r}:\n"
        "    try: importlib.import_module(name)\n"
        "    except Exception: pass\n"  # what the package's dependencies register is theirs
        "calls = []\n"
        "os.register_at_fork = lambda **hooks: calls.append('fork hook')\n"
        "atexit.register = lambda *a, **k: calls.append('exit hook')\n"
        "import vwo_heap_middleware, vwo_heap_middleware.engine, vwo_heap_middleware.vwo_sdk\n"
        "from vwo_heap_middleware import Config, FlagEngine\n"
        "FlagEngine(Config(account_id='1', sdk_key='k', gateway_url='http://127.0.0.1:9'))\n"
        "print(calls, threading.active_count())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] 1", "no hooks and no threads until start()"


def test_the_core_needs_no_web_server_library() -> None:
    requirements = importlib.metadata.requires("vwo-heap-middleware") or []
    core = [r for r in requirements if "extra ==" not in r]
    assert not [r for r in core if r.lower().startswith(("werkzeug", "flask", "starlette"))]
    gateway = [r for r in requirements if re.search(r"extra == ['\"]gateway", r)]
    assert sorted(re.split(r"[<>=;\s]", r)[0] for r in gateway) == ["cheroot", "werkzeug"]


def test_no_import_cycles_and_one_door_to_the_sdk() -> None:
    package = Path(vwo_heap_middleware.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0)]
                base = base or name.split(".")[:1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                found.update(f"{target}.{a.name}" for a in node.names)
                found.add(target)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        imports[name] = found
    sdk_users = sorted(
        n
        for n, found in imports.items()
        if any(m.split(".")[0] in ("vwo", "wingify") for m in found)
    )
    assert sdk_users == ["vwo_heap_middleware.vwo_sdk"]
    graph = {n: {m for m in found if m in imports and m != n} for n, found in imports.items()}
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in graph[start]:
            if nxt in path:
                return [*path[path.index(nxt) :], nxt]
            found = cycle_from(nxt, [*path, nxt])
            if found:
                return found
        return None

    cycles = [c for n in graph if (c := cycle_from(n, [n]))]
    assert cycles == []
