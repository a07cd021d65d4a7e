"""5,000 generated hostile requests (fixed seed) through each real server: uvicorn with the
FastAPI example and the Django one, gunicorn with the Flask example. None may get a 5xx or leave a
traceback, and a Heap segment member is decided correctly while the fuzzing runs (the circuit breaker stays closed)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from examples.demo_setup import heap_cookie
from tests.support import DATA, ROOT, free_port, wait_until_serving
from vwo_heap_middleware.testing.gateway import LocalGateway

MEMBER = "mira@example.net"
REQUESTS_PER_SERVER = 5_000
SERVERS = {
    "fastapi-uvicorn": "-m uvicorn examples.fastapi_app.app:app --port {port} --log-level warning",
    "django-uvicorn": (
        "-m uvicorn examples.django_app.asgi:application --port {port} --log-level warning"
    ),
    "flask-gunicorn": (
        "-m gunicorn examples.flask_app.app:app --bind 127.0.0.1:{port} --workers 2 "
        "--log-level warning"
    ),
}
JSON_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1e308,
    12345678901234567890,
    "",
    "null",
    "undefined",
    [],
    {},
    [[[[[[]]]]]],
    {"a": {"b": {"c": {}}}},
    "x" * 300,
    "Zoë 山田 🙂",
]


class Fuzzer:
    """Builds hostile header sets from one seeded random generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self, size: int) -> str:
        alphabet = 'ab%{}[]":;,=\\ \t\x7f\u00e9\u200b\ud800\U0001f600'
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    def heap_json(self) -> str:
        document: Any = {
            "userId": self.rng.choice(["0042", "4835702585115963", None, 42, "x" * 40, ""]),
            "identity": self.rng.choice(JSON_VALUES + [self.text(30), f"fz{self.rng.random()}@x"]),
        }
        if self.rng.random() < 0.2:
            document = self.rng.choice(JSON_VALUES)
        raw = json.dumps(document, ensure_ascii=self.rng.random() < 0.5)
        if self.rng.random() < 0.2:
            raw = raw.replace("@", "\\ud800")  # an escaped lone surrogate
        if self.rng.random() < 0.1:
            raw = "[" * self.rng.randint(100, 5000) + raw
        return raw

    def cookie_header(self) -> bytes:
        pairs: list[str] = []
        if self.rng.random() < 0.05:  # thousands of cookies
            pairs += [f"c{n}=v{n}" for n in range(self.rng.randint(1000, 3000))]
        for _ in range(self.rng.choice([0, 1, 2, 3, 8])):
            kind = self.rng.random()
            if kind < 0.3:
                name = self.rng.choice(["_hp5_meta.1", "_hp2_id.1", "_hp5_meta.999", "_hp2_id."])
                value = self.heap_json()
                encoded = quote(value.encode("utf-8", "surrogatepass"))
                pairs.append(f"{name}={encoded if self.rng.random() < 0.7 else value}")
            elif kind < 0.6:
                pairs.append(f"c{self.rng.randint(0, 9)}={self.text(20)}")
            else:
                pairs.append(self.text(15))
        header = "; ".join(pairs)
        if self.rng.random() < 0.05:
            header = "_hp5_meta.1=" + "A" * self.rng.randint(4000, 60000)
        return header.encode("utf-8", "surrogatepass")

    def headers(self) -> list[bytes]:
        lines = [b"Host: fuzz"]
        if self.rng.random() < 0.8:
            lines.append(b"Cookie: " + self.cookie_header())
        if self.rng.random() < 0.3:
            lines.append(b"Cookie: " + self.cookie_header())  # a second Cookie header
        for _ in range(self.rng.choice([0, 0, 1, 2])):
            identity = self.rng.choice(
                [
                    self.text(40).encode("utf-8", "surrogatepass"),
                    bytes(self.rng.randrange(128, 256) for _ in range(10)),  # not UTF-8
                    b"  padded@example.com  ",
                    b"x" * 300,
                    b"null",
                ]
            )
            lines.append(b"X-Heap-Identity: " + identity)
        if self.rng.random() < 0.3:
            lines.append(b"X-Forwarded-For: " + self.text(60).encode("utf-8", "surrogatepass"))
        if self.rng.random() < 0.2:
            lines.append(b"User-Agent: " + self.text(2000).encode("utf-8", "surrogatepass"))
        return [line.replace(b"\r", b"").replace(b"\n", b"") for line in lines]


class Connection:
    """A keep-alive HTTP/1.1 connection that sends header bytes exactly as given."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def request(self, path: str, headers: list[bytes]) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                self.buffer = b""
            try:
                head = f"GET {path} HTTP/1.1\r\n".encode() + b"\r\n".join(headers) + b"\r\n\r\n"
                self.sock.sendall(head)
                return self._response()
            except (ConnectionError, EOFError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            assert self.sock is not None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        found, _, self.buffer = self.buffer.partition(marker)
        return found

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert self.sock is not None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def _response(self) -> tuple[int, bytes]:
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status = int(head.split(" ", 2)[1])
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
        }
        if fields.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self._read_until(b"\r\n").split(b";")[0], 16):
                body += self._read(size)
                self._read(2)
            self._read_until(b"\r\n")
        else:
            body = self._read(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


@pytest.fixture(scope="module")
def gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DATA / "other_flags.toml") as gateway:
        gateway.set_segments({"gold_list": [MEMBER]})
        yield gateway


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_fuzzed_requests_never_fail_and_members_keep_their_flags(
    name: str, gateway: LocalGateway, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "VWO_ACCOUNT_ID": "555",
        "VWO_SDK_KEY": "examples-test-key",
        "VWO_GATEWAY_URL": gateway.url,
        "VWO_HEAP_FLAGS": "premium_checkout,new_banner",
        "VWO_HEAP_TRUSTED_PROXIES": "127.0.0.1",
    }
    stderr_path = tmp_path / "stderr.log"
    command = [sys.executable, *SERVERS[name].format(port=port).split()]
    with (
        stderr_path.open("wb") as stderr,
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        ) as process,
    ):
        try:
            wait_until_serving(process, f"http://127.0.0.1:{port}")
            fuzzer, connection = Fuzzer(seed=20261128), Connection(port)
            statuses: dict[int, int] = {}
            member = [b"Host: x", b"Cookie: " + heap_cookie(MEMBER).encode()]
            wrong_for_member = 0
            for n in range(REQUESTS_PER_SERVER):
                path = fuzzer.rng.choice(["/api/flags", "/", "/premium"])
                status, _ = connection.request(path, fuzzer.headers())
                statuses[status] = statuses.get(status, 0) + 1
                if n % 250 == 0:
                    status, body = connection.request("/api/flags", member)
                    flags = json.loads(body)["flags"]
                    wrong_for_member += flags["premium_checkout"]["reason"] != "targeted"
            connection.close()
        finally:
            process.terminate()
            process.wait(15)
    log = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert not [s for s in statuses if s >= 500], statuses
    assert sum(statuses.values()) == REQUESTS_PER_SERVER
    assert "Traceback" not in log, log[-3000:]
    assert wrong_for_member == 0, "members kept their flag while the fuzzing ran"
