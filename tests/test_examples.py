"""The example apps on real servers (uvicorn; gunicorn with --preload and two forked workers),
configured only through the environment, against a local gateway with data they have never seen."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from examples.demo_setup import heap_cookie
from tests.support import DATA, ROOT, free_port, wait_until, wait_until_serving
from vwo_heap_middleware.testing.gateway import LocalGateway

http = urllib3.PoolManager(retries=False, timeout=5.0)
MEMBER = "mira@example.net"
BANNER = {
    "enabled": True,
    "variables": {"text": "Hello from the test gateway", "color": "#123456"},
    "reason": "targeted",
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DATA / "other_flags.toml") as gateway:
        gateway.set_segments({"gold_list": [MEMBER]})
        yield gateway


SERVERS = {
    "fastapi-uvicorn": [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.fastapi_app.app:app",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ],
    "fastapi-uvicorn-h11": [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.fastapi_app.app:app",
        "--port",
        "{port}",
        "--http",
        "h11",
        "--log-level",
        "warning",
    ],
    "django-uvicorn": [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.django_app.asgi:application",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ],
    "django-gunicorn": [
        sys.executable,
        "-m",
        "gunicorn",
        "examples.django_app.wsgi:application",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        "3",
        "--preload",
        "--log-level",
        "warning",
    ],
    "flask-werkzeug": [
        sys.executable,
        "-c",
        "from werkzeug.serving import run_simple; from examples.flask_app.app import app; "
        "run_simple('127.0.0.1', {port}, app, threaded=True)",
    ],
    "flask-gunicorn": [
        sys.executable,
        "-m",
        "gunicorn",
        "examples.flask_app.app:app",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        "2",
        "--preload",
        "--log-level",
        "warning",
    ],
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, gateway: LocalGateway) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "VWO_ACCOUNT_ID": "555",
        "VWO_SDK_KEY": "examples-test-key",
        "VWO_GATEWAY_URL": gateway.url,
        "VWO_HEAP_FLAGS": "premium_checkout,new_banner",
    }
    command = [part.format(port=port) for part in SERVERS[request.param]]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(process, base)
            yield base
        finally:
            process.terminate()
            process.wait(15)


def get(url: str, identity: str | None = None) -> urllib3.BaseHTTPResponse:
    headers = {"Cookie": heap_cookie(identity)} if identity else {}
    return http.request("GET", url, headers=headers)


def test_api_flags_for_a_member(server: str) -> None:
    for _ in range(4):  # every worker
        body: Any = get(f"{server}/api/flags", MEMBER).json()
        assert body == {
            "user_id": MEMBER,
            "identity": MEMBER,
            "flags": {
                "premium_checkout": {
                    "enabled": True,
                    "variables": {"tier_label": "Gold", "discount_pct": 30},
                    "reason": "targeted",
                },
                "new_banner": BANNER,
            },
        }


def test_api_flags_for_others(server: str) -> None:
    other = get(f"{server}/api/flags", "Mira@example.net").json()
    assert other["flags"] == {
        "premium_checkout": {"enabled": False, "variables": {}, "reason": "not_targeted"},
        "new_banner": BANNER,
    }
    anonymous = get(f"{server}/api/flags").json()
    assert anonymous == {
        "user_id": None,
        "identity": None,
        "flags": {
            key: {"enabled": False, "variables": {}, "reason": "no_user"}
            for key in ("premium_checkout", "new_banner")
        },
    }


def test_home_page(server: str) -> None:
    member = get(f"{server}/", MEMBER)
    assert member.status == 200
    page = member.data.decode()
    assert "Gold checkout" in page and "30% off" in page and "Hello from the test gateway" in page
    assert "Cookie" in member.headers["Vary"]
    assert "Standard checkout" in get(f"{server}/", "someone@example.net").data.decode()


def test_premium_page(server: str) -> None:
    assert get(f"{server}/premium", MEMBER).status == 200
    assert get(f"{server}/premium", "someone@example.net").status == 404
    assert get(f"{server}/premium").status == 404


def test_raw_bytes_that_are_not_utf8_are_anonymous(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /api/flags HTTP/1.1\r\nHost: x\r\nX-Heap-Identity: caf\xe9\r\n"
            b'Cookie: _hp5_meta.1=%FF%FE; x={"a\r\nConnection: close\r\n\r\n'
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"identity":null' in answer.replace(b" ", b"")


def raw_get(server: str, *header_lines: bytes) -> dict[str, Any]:
    """GET /api/flags with headers exactly as given (duplicates, spaces), over a raw socket."""
    port = int(server.rsplit(":", 1)[1])
    request = b"GET /api/flags HTTP/1.1\r\nHost: x\r\n" + b"".join(
        line + b"\r\n" for line in header_lines
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    result: dict[str, Any] = json.loads(body)
    return result


def test_the_same_request_is_decided_the_same_way_on_every_server(server: str) -> None:
    member = MEMBER.encode()
    spaced = raw_get(server, b"X-Heap-Identity:   " + member + b"  ")
    assert spaced["identity"] == MEMBER, "spaces around a header value are not the identity"
    twice = raw_get(server, b"X-Heap-Identity: " + member, b"X-Heap-Identity: other@example.net")
    assert twice["identity"] is None, "two identity headers name nobody"
    cookies = raw_get(server, b"Cookie: theme=dark", b"Cookie: " + heap_cookie(MEMBER).encode())
    assert cookies["identity"] == MEMBER, "two Cookie headers count as one"


def test_a_purchase_reaches_vwo_as_a_conversion(server: str, gateway: LocalGateway) -> None:
    """Every demo shop records the experiment's conversion (``purchase`` is a metric of
    ``premium_checkout``), sent as the visitor's with the impressions."""
    before = gateway.records()["custom_events"]
    answer = http.request("POST", f"{server}/purchase", headers={"Cookie": heap_cookie(MEMBER)})
    assert answer.status == 200 and answer.json() == {"conversion": "queued"}
    anonymous = http.request("POST", f"{server}/purchase")
    assert anonymous.status == 200 and anonymous.json() == {"conversion": "no_user"}
    wait_until(lambda: gateway.records()["custom_events"] == before + 1, what="the conversion")
