"""HTTP/1.1 for gateway lookups, as lean as a request can be: each request is written whole in
one call, and answers are parsed by httptools (the C parser uvicorn uses), or by h11 where
httptools is not installed. Shared by the blocking client and the event-loop one."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11

try:
    import httptools
except ImportError:  # pragma: no cover - the h11 fallback is tested by choosing it
    httptools = None  # type: ignore[assignment]

from ..config import Config

PARSERS = ("httptools", "h11")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


class Reader(Protocol):
    """Frames requests and reads responses on one connection, one after the other."""

    def frame(self, target: str) -> bytes:
        """The request for ``target`` (path and query), whole."""

    def feed(self, data: bytes) -> Response | None:
        """Bytes received; the response once it is complete. Raises ``ValueError`` on junk."""


@dataclass(frozen=True)
class Endpoint:
    """Where the gateway is, and how to speak to it."""

    host: str
    port: int
    host_header: str
    tls: ssl.SSLContext | None
    parser: str

    @classmethod
    def of(cls, config: Config, parser: str | None = None) -> Endpoint | None:
        """The gateway of ``config``; None when its URL names none (offline)."""
        parts = urlsplit(config.gateway_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        tls = None
        if parts.scheme == "https":  # the system's CAs (or the configured ones), as urllib3
            tls = ssl.create_default_context(cafile=config.gateway_ca_file)
        chosen = parser or ("httptools" if httptools is not None else "h11")
        if chosen not in PARSERS or (chosen == "httptools" and httptools is None):
            raise ValueError(f"parser must be one of {PARSERS} (installed), got {chosen!r}")
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, parts.netloc, tls, chosen)

    def reader(self) -> Reader:
        if self.parser == "httptools":
            return _HttptoolsReader(self.host_header)
        return _H11Reader(self.host_header)


class _HttptoolsReader:
    __slots__ = ("_body", "_done", "_host", "_parser")

    def __init__(self, host: str) -> None:
        self._host = f" HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii")
        self._parser: Any = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._done: Response | None = None

    def frame(self, target: str) -> bytes:
        return b"GET " + target.encode("ascii") + self._host

    def feed(self, data: bytes) -> Response | None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            raise ValueError(f"not an HTTP answer ({error})") from None
        done, self._done = self._done, None
        return done

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._done = Response(parser.get_status_code(), body, parser.should_keep_alive())
        self._body = []


class _H11Reader:
    __slots__ = ("_body", "_conn", "_host", "_status")

    def __init__(self, host: str) -> None:
        self._host = host
        self._conn = h11.Connection(h11.CLIENT)
        self._body: list[bytes] = []
        self._status = 0

    def frame(self, target: str) -> bytes:
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        request = h11.Request(method="GET", target=target, headers=[("Host", self._host)])
        return (self._conn.send(request) or b"") + (self._conn.send(h11.EndOfMessage()) or b"")

    def feed(self, data: bytes) -> Response | None:
        try:
            self._conn.receive_data(data)
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return None
                if isinstance(event, h11.Response):
                    self._status = event.status_code
                elif isinstance(event, h11.Data):
                    self._body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    keep = self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE
                    body, self._body = b"".join(self._body), []
                    return Response(self._status, body, keep)
                elif isinstance(event, h11.ConnectionClosed):
                    raise ValueError("the gateway closed the connection")
        except h11.ProtocolError as error:
            raise ValueError(f"not an HTTP answer ({error})") from None
