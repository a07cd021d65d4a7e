"""The tutorials in docs/tutorials/, done as a reader would: every file a page shows (taken from
the page itself, so it cannot drift), real users logged in (Django's own login view; the Flask
and FastAPI apps' session logins), and the site driven over HTTP: Django under uvicorn (ASGI)
and gunicorn (WSGI), FastAPI under uvicorn, Flask under gunicorn."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import DEMO_FLAGS, DEMO_SEGMENTS, ROOT, free_port, gateway_env, v5, wait_until
from vwo_heap_middleware.testing.gateway import LocalGateway

pytestmark = pytest.mark.integration

PAGES = ROOT / "docs" / "tutorials"
FILE_BLOCK = re.compile(
    r"```(?:python|html)\n(?:# file: (?P<py>\S+)(?P<append> \(add at the end\))?"
    r"|<!-- file: (?P<html>\S+) -->)\n(?P<body>.*?)```",
    re.S,
)
MEMBER, MEMBER_PASSWORD = "ada", "ada-pw-0451"
ANONYMOUS = "5550001112223334"  # Heap's userId in the browser before the login
HEAP_COOKIE = v5(None, user_id=ANONYMOUS).split("=", 1)
OUTSIDER, OUTSIDER_PASSWORD = "bob", "bob-pw-0451"


def project_files(page: str) -> list[tuple[str, str, bool]]:
    """(path, text, append) for every file block of a tutorial."""
    found = []
    for block in FILE_BLOCK.finditer((PAGES / page).read_text(encoding="utf-8")):
        found.append((block["py"] or block["html"], block["body"], bool(block["append"])))
    return found


def write(project: Path, files: list[tuple[str, str, bool]]) -> None:
    for path, text, append in files:
        target = project / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a" if append else "w", encoding="utf-8") as file:
            file.write(("\n" if append else "") + text)


def manage(project: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, str], LocalGateway]]:
    """The tutorial's project, migrated, with a segment member and an outsider as users."""
    project = tmp_path_factory.mktemp("tutorial")
    with LocalGateway.from_files(flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS) as gateway:
        env = gateway_env(
            gateway,
            # A test that needs an answer never races the production lookup timeout.
            VWO_HEAP_LOOKUP_TIMEOUT="10",
            VWO_HEAP_EVALUATION_TIMEOUT="10",
            PYTHONPATH=str(project),
        )
        subprocess.run(
            [sys.executable, "-m", "django", "startproject", "shop", str(project)],
            check=True,
            env=env,
            timeout=60,
        )
        files = project_files("django.md")
        assert {path for path, _, _ in files} >= {
            "shop/settings.py",
            "shop/identity.py",
            "shop/views.py",
            "shop/urls.py",
            "shop/asgi.py",
            "templates/premium.html",
        }
        write(project, files)
        said = manage(project, env, "check")
        assert "System check identified no issues" in said
        manage(project, env, "migrate", "--verbosity", "0")
        users = (
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user({MEMBER!r}, 'ada@example.com', {MEMBER_PASSWORD!r}); "
            f"User.objects.create_user({OUTSIDER!r}, 'bob@example.com', {OUTSIDER_PASSWORD!r})"
        )
        manage(project, env, "shell", "-c", users)
        yield project, env, gateway


def serve(
    project: Path, env: dict[str, str], server: str, app: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if server == "uvicorn":
        command = ["-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    else:
        command = ["-m", "gunicorn", app, "-b", f"127.0.0.1:{port}"]
        command += ["-w", "2", "--log-level", "warning"]
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    return process, url


def logged_in(url: str, username: str, password: str) -> requests.Session:
    """A browser's session: the login form fetched, filled and posted with its CSRF token."""
    session = requests.Session()
    session.cookies.set(*HEAP_COOKIE)  # heap.js was on the site before the login
    form = session.get(f"{url}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text
    answer = session.post(
        f"{url}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
        headers={"Referer": f"{url}/accounts/login/"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302 and "sessionid" in session.cookies, answer.text
    return session


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_the_tutorial_project_serves_the_flag_to_logged_in_members_only(
    site: tuple[Path, dict[str, str], LocalGateway], server: str
) -> None:
    """Issue: under uvicorn every logged-in user was anonymous (the resolver ran on the loop
    and Django refused it): a member who got the flag under runserver got a 404. With aliasing,
    the login links the member's e-mail to the anonymous visit's Heap userId."""
    project, env, gateway = site
    app = "shop.asgi:application" if server == "uvicorn" else "shop.wsgi:application"
    process, url = serve(project, env, server, app)
    try:
        wait_until_serving(process, url)
        member = logged_in(url, MEMBER, MEMBER_PASSWORD)
        page = member.get(f"{url}/premium", timeout=30)
        assert page.status_code == 200 and "Checkout: Premium" in page.text
        assert "private" in page.headers["Cache-Control"]
        linked = lambda: gateway.app.aliases.get("ada@example.com") == ANONYMOUS  # noqa: E731
        wait_until(linked, what="the login linked to the anonymous visit")
        outsider = logged_in(url, OUTSIDER, OUTSIDER_PASSWORD)
        assert outsider.get(f"{url}/premium", timeout=30).status_code == 404
        forged = requests.get(
            f"{url}/premium",
            headers={"X-Heap-Identity": "ada@example.com", "Cookie": v5("ada@example.com")},
            timeout=30,
        )
        assert forged.status_code == 404, "a client-sent identity names nobody"
        anonymous = requests.get(url, headers={"Cookie": v5(None)}, timeout=30)
        assert anonymous.text == "banner on", "Heap's anonymous id still buckets"
    finally:
        process.terminate()
        process.wait(30)
        if process.stderr is not None:
            process.stderr.close()


def wait_until_serving(process: subprocess.Popen[bytes], url: str) -> None:
    """The tutorial's site has no /healthz: its home page answers when it serves."""
    session = requests.Session()

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "died")
        try:
            return session.get(url, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(up, timeout=60, what=f"{url} to serve")


@pytest.mark.parametrize(
    ("page", "server", "form"),
    [("fastapi.md", "uvicorn", False), ("flask.md", "gunicorn", True)],
    ids=["fastapi", "flask"],
)
def test_the_app_tutorials_serve_the_flag_to_logged_in_members_only(
    tmp_path: Path, page: str, server: str, form: bool
) -> None:
    """The trusted resolver reads each app's own session login: a member gets the flag, an
    outsider and a forged Heap cookie or header do not, an anonymous Heap visitor is bucketed."""
    files = project_files(page)
    assert [path for path, _, _ in files][:1] == ["app.py"]
    write(tmp_path, files)
    with LocalGateway.from_files(flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS) as gateway:
        env = gateway_env(
            gateway,
            VWO_HEAP_FLAGS="premium_checkout,new_banner",
            VWO_HEAP_TRUST_CLIENT_IDENTITY="false",
            **({"VWO_HEAP_ALIASING": "true"} if page == "fastapi.md" else {}),  # its exports
            VWO_HEAP_LOOKUP_TIMEOUT="10",  # an answer, even on a busy machine
            VWO_HEAP_EVALUATION_TIMEOUT="10",
            SESSION_SECRET="tests-only",
            PYTHONPATH=str(tmp_path),
        )
        process, url = serve(tmp_path, env, server, "app:app")
        try:
            wait_until_serving(process, url)

            def session_of(email: str, password: str) -> requests.Session:
                session = requests.Session()
                session.cookies.set(*HEAP_COOKIE)  # heap.js was on the site before the login
                credentials = {"email": email, "password": password}
                sent = {"data": credentials} if form else {"json": credentials}
                answer = session.post(f"{url}/login", timeout=30, **sent)  # type: ignore[arg-type]
                assert answer.status_code == 200, answer.text
                return session

            member = session_of("ada@example.com", "ada-pw-0451")
            page_ = member.get(f"{url}/premium", timeout=30)
            assert page_.status_code == 200 and "Premium" in page_.text, page_.text
            linked = lambda: gateway.app.aliases.get("ada@example.com") == ANONYMOUS  # noqa: E731
            wait_until(linked, what="the login linked to the anonymous visit")
            assert len([c for c in gateway.records()["alias_calls"] if c["endpoint"] == "set"]) == 1
            outsider = session_of("bob@example.com", "bob-pw-0451")
            assert outsider.get(f"{url}/premium", timeout=30).status_code == 404
            forged = {"X-Heap-Identity": "ada@example.com", "Cookie": v5("ada@example.com")}
            assert requests.get(f"{url}/premium", headers=forged, timeout=30).status_code == 404
            anonymous = requests.get(url, headers={"Cookie": v5(None)}, timeout=30)
            assert anonymous.json() == {"banner": True}, "Heap's anonymous id still buckets"
            bought = member.post(f"{url}/buy", timeout=30)
            assert bought.json() == {"tracked": True}
            wait_until(
                lambda: gateway.records()["events"].get("purchase") == 1,
                what="the conversion at the gateway",
            )
            sent = [e for e in gateway.records()["event_log"] if e["name"] == "purchase"]
            assert sent[0]["body"]["d"]["event"]["props"]["revenue"] == 30.0
        finally:
            process.terminate()
            process.wait(30)
            if process.stderr is not None:
                process.stderr.close()
