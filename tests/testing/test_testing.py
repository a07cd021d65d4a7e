"""The test kit: ``override_flags`` across adapters, threads and tasks, and the pytest plugin."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from flask import Flask, g
from werkzeug.test import Client

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, ROOT, visitor
from vwo_heap_middleware import FlagDecision, FlagEngine, Reason, requires_flag
from vwo_heap_middleware.fastapi import requires_flag_dependency
from vwo_heap_middleware.flask import HeapFlags
from vwo_heap_middleware.starlette import HeapFlagsMiddleware
from vwo_heap_middleware.testing import override_flags
from vwo_heap_middleware.testing.pytest_plugin import NO_FLAGS_FILE
from vwo_heap_middleware.wsgi import ENVIRON_KEY, HeapFlagsWSGIMiddleware

STRANGER = "bob@example.com"  # not in the demo segment


@pytest.fixture
def engine() -> Iterator[FlagEngine]:
    engine = FlagEngine.offline(offline_flags=DEMO_FLAGS, offline_segments=DEMO_SEGMENTS)
    yield engine
    engine.close()


def decide(engine: FlagEngine, key: str = "premium_checkout") -> FlagDecision:
    return engine.decide(visitor(engine.config, STRANGER), [key])[key]


def test_context_manager_stacks_and_unwinds(engine: FlagEngine) -> None:
    assert decide(engine).reason is Reason.NOT_TARGETED
    with override_flags({"premium_checkout": True}):
        assert decide(engine) == FlagDecision("premium_checkout", True, {}, Reason.OVERRIDE)
        with override_flags({"premium_checkout": {"enabled": True, "variables": {"tier": "x"}}}):
            assert decide(engine).variables == {"tier": "x"}
        assert decide(engine).variables == {}
        assert decide(engine, "new_banner").reason is Reason.TARGETED, "other keys as usual"
    assert decide(engine).reason is Reason.NOT_TARGETED


def test_every_thread_and_task_sees_it(engine: FlagEngine) -> None:
    seen: list[bool] = []
    with override_flags({"premium_checkout": True}):
        thread = threading.Thread(target=lambda: seen.append(decide(engine).enabled))
        thread.start()
        thread.join()

        async def task() -> bool:
            return (
                await engine.decide_async(visitor(engine.config, STRANGER), ["premium_checkout"])
            )["premium_checkout"].enabled

        seen.append(asyncio.run(task()))
    assert seen == [True, True]


def test_decorator_on_sync_and_async_functions(engine: FlagEngine) -> None:
    @override_flags({"new_banner": False})
    def sync_check() -> bool:
        return decide(engine, "new_banner").enabled

    @override_flags({"new_banner": False})
    async def async_check() -> bool:
        return decide(engine, "new_banner").enabled

    assert sync_check() is False and asyncio.run(async_check()) is False
    assert decide(engine, "new_banner").enabled, "unwound after each call"


def test_fastapi_guards_dependencies_and_state_see_overrides(engine: FlagEngine) -> None:
    app = FastAPI()
    app.add_middleware(HeapFlagsMiddleware, engine=engine)

    @app.get("/premium")
    @requires_flag("premium_checkout")
    async def premium() -> dict[str, str]:
        return {"page": "premium"}

    @app.get("/tier")
    async def tier(
        decision: Annotated[FlagDecision, Depends(requires_flag_dependency("premium_checkout"))],
    ) -> str:
        return str(decision.variable("tier_label"))

    with TestClient(app) as client:
        assert client.get("/premium").status_code == 404
        with override_flags(
            {"premium_checkout": {"enabled": True, "variables": {"tier_label": "Test"}}}
        ):
            assert client.get("/premium").json() == {"page": "premium"}
            assert client.get("/tier").json() == "Test"
    with TestClient(app) as client:  # a second lifespan on the same engine
        assert client.get("/premium").status_code == 404
    app.dependency_overrides[requires_flag_dependency("premium_checkout")] = lambda: FlagDecision(
        "x", True
    )
    with TestClient(app) as client:
        assert client.get("/tier").status_code == 200, "the same callable for the same arguments"


def test_flask_app_factories_and_overrides() -> None:
    def create_app() -> Flask:
        app = Flask(__name__)
        HeapFlags(
            app, engine=FlagEngine.offline(offline_flags=DEMO_FLAGS, offline_segments=DEMO_SEGMENTS)
        )

        @app.get("/")
        def index() -> str:
            return "on" if g.flags.enabled("premium_checkout") else "off"

        return app

    first, second = create_app(), create_app()  # two apps, two engines, one process
    assert first.test_client().get("/", headers={"X-Heap-Identity": "ada@example.com"}).text == "on"
    assert second.test_client().get("/").text == "off"
    with override_flags({"premium_checkout": True}):
        assert second.test_client().get("/").text == "on"
    for app in (first, second):
        app.extensions["vwo_heap"].engine.close()


def test_plain_wsgi_sees_overrides(engine: FlagEngine) -> None:
    def app(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
        flags = environ[ENVIRON_KEY]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"on" if flags.enabled("premium_checkout") else b"off"]  # type: ignore[attr-defined]

    client = Client(HeapFlagsWSGIMiddleware(app, engine=engine))
    assert client.get("/").get_data() == b"off"
    with override_flags({"premium_checkout": True}):
        assert client.get("/").get_data() == b"on"


def test_the_pytest_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        f"[pytest]\nvwo_heap_flags = {DEMO_FLAGS}\nvwo_heap_segments = {DEMO_SEGMENTS}\n"
    )
    pytester.makepyfile(
        """
        from vwo_heap_middleware import RequestFacts, build_visitor

        def who(engine, identity):
            return build_visitor(engine.config, RequestFacts(identity_header=identity), None)

        def test_engine_and_overrides(flag_engine, flag_overrides):
            ada, bob = who(flag_engine, "ada@example.com"), who(flag_engine, "bob@example.com")
            assert flag_engine.decide(ada, ["premium_checkout"])["premium_checkout"].enabled
            assert not flag_engine.decide(bob, ["premium_checkout"])["premium_checkout"].enabled
            flag_overrides.set("premium_checkout", enabled=True, variables={"tier_label": "T"})
            decision = flag_engine.decide(bob, ["premium_checkout"])["premium_checkout"]
            assert decision.enabled and decision.variables == {"tier_label": "T"}

        def test_reset_after_each_test(flag_engine):
            bob = who(flag_engine, "bob@example.com")
            assert not flag_engine.decide(bob, ["premium_checkout"])["premium_checkout"].enabled
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_the_flag_engine_fixture_says_what_it_needs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VWO_HEAP_OFFLINE_FLAGS", raising=False)
    pytester.makepyfile("def test_it(flag_engine):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{NO_FLAGS_FILE}*"])


def test_the_plugin_is_harmless_when_unused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import sys\n\ndef test_it():\n    assert 'flask' not in sys.modules\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def installed_wheel(tmp_path: Path) -> Path:
    """This package built as a wheel and installed alone into a folder of its own."""
    wheels, target = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = [str(path) for path in wheels.glob("vwo_heap_middleware-*.whl")]
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), *wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def run_user_project(
    name: str, target: Path, tmp_path: Path, *command: str
) -> subprocess.CompletedProcess[str]:
    """A user's project (``tests/<name>``) run on the installed wheel, with no VWO variables."""
    project = tmp_path / name
    if not project.exists():
        shutil.copytree(ROOT / "tests" / name, project)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VWO_", "HEAP_"))}
    env.update(PYTHONPATH=f"{target}{os.pathsep}{project}", WHEEL_TARGET=str(target))
    return subprocess.run(
        [sys.executable, *command],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_user_suite_from_the_readme_passes_on_the_installed_wheel(tmp_path: Path) -> None:
    """No gateway, a wheel installed apart, tests written as the README shows."""
    target = installed_wheel(tmp_path)
    done = run_user_project(
        "user_project", target, tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_a_django_project_from_the_readme_passes_with_pytest_django(tmp_path: Path) -> None:
    """Settings, middleware, a guarded view, a template tag, a DRF view and tests with
    pytest-django and override_flags, on the installed wheel; ``manage.py check`` is clean,
    and a mistake in the settings is a named error, not a traceback."""
    target = installed_wheel(tmp_path)
    done = run_user_project(
        "django_project", target, tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    check = ["-m", "django", "check", "--settings", "shop.settings"]
    clean = run_user_project("django_project", target, tmp_path, *check)
    assert clean.returncode == 0 and "no issues" in clean.stdout, clean.stdout + clean.stderr
    settings = tmp_path / "django_project" / "shop" / "settings.py"
    settings.write_text(settings.read_text() + '\nVWO_HEAP["evaluation_timeout"] = 0\n')
    broken = run_user_project("django_project", target, tmp_path, *check)
    assert broken.returncode != 0
    assert "vwo_heap.E001" in broken.stderr and "evaluation_timeout must be" in broken.stderr
    assert "Traceback" not in broken.stderr
