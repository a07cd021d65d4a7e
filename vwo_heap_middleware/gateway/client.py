"""Clients of the real VWO gateway service: kept-alive connections, short timeouts.

Lookups asked from an event loop have their own client, ``loop.LoopGateway``.

The SDK's client retries three times with 2, 4 and 8 s sleeps; on a request path that turns a
gateway hiccup into a 14 s page. ``GatewayClient`` (settings, memberships, user details) makes
one attempt within its timeout and fails fast; the callers (settings loop, lookups) decide what
failing means. ``EventClient`` sends batches of events, one try each; the spool retries.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote_plus, urlencode

import urllib3

from ..config import Config
from ..identity import clean_identity
from .wire import Endpoint, Reader, Response


class Gateway(Protocol):
    """What the engine asks a gateway: the real one (``GatewayClient``) or ``OfflineGateway``."""

    def fetch_settings(self, timeout: float = ...) -> dict[str, Any]: ...
    def is_member(self, list_id: str, attribute: str) -> bool: ...
    def user_details(self, user_agent: str | None, ip_address: str | None) -> dict[str, Any]: ...
    def alias_of(self, user_id: str) -> str: ...
    def set_alias(self, user_id: str, alias_id: str, timeout: float = ...) -> None: ...
    def close(self) -> None: ...


class GatewayError(Exception):
    """The gateway did not answer usefully: no connection, a timeout, an error status, junk.

    ``gateway_fault`` is False when the gateway refused what was asked (HTTP 4xx): that says
    nothing about its health, so the circuit breaker does not count it.
    """

    def __init__(self, message: str, *, gateway_fault: bool = True) -> None:
        super().__init__(message)
        self.gateway_fault = gateway_fault


@dataclass(frozen=True)
class Sent:
    """What came back for one event: ``status`` None when no answer came at all."""

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Any = None
    error: str | None = None


class EventClient:
    """Sends event batches: one try each, pooled keep-alive connections (the spool retries)."""

    def __init__(self, ca_file: str | None = None) -> None:
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=2, retries=False, ca_certs=ca_file)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeout: float = 3.0,
    ) -> Sent:
        try:
            response = self._pool.request(
                method, url, body=body, headers=headers, timeout=urllib3.Timeout(total=timeout)
            )
        except urllib3.exceptions.HTTPError as exc:
            return Sent(None, error=type(exc).__name__)
        text = response.data.decode("utf-8", "replace")
        data: Any = text
        if response.headers.get("Content-Type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                data = json.loads(text)
        error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        return Sent(response.status, dict(response.headers), data, error)


class GatewayClient:
    """The real gateway's settings (urllib3), memberships and user details (``Connections``):
    one try each, within its timeout, over keep-alive connections."""

    def __init__(self, config: Config, *, parser: str | None = None) -> None:
        self.config = config
        self.base_url = config.gateway_url
        self._pool = urllib3.PoolManager(
            num_pools=1, maxsize=2, retries=False, ca_certs=config.gateway_ca_file
        )
        endpoint = Endpoint.of(config, parser)
        self._connections = Connections(endpoint) if endpoint is not None else None
        self._targets = LookupTargets(config)

    def fetch_settings(self, timeout: float = 5.0) -> dict[str, Any]:
        query = {
            "i": self.config.sdk_key,
            "a": self.config.account_id,
            "platform": "server",
            "api-version": "1",
            "s": "prod",
        }
        url = f"{self.base_url}{SETTINGS_PATH}?{urlencode(query)}"
        try:
            response = self._pool.request(
                "GET", url, timeout=urllib3.Timeout(total=timeout), retries=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise GatewayError(f"{SETTINGS_PATH}: {type(exc).__name__}") from None
        settings = parse_answer(SETTINGS_PATH, response.status, response.data)
        if not isinstance(settings, dict):
            raise GatewayError(f"{SETTINGS_PATH}: the answer is not a settings object")
        return settings

    def is_member(self, list_id: str, attribute: str) -> bool:
        return member(self._lookup(self._targets.membership(list_id, attribute)))

    def user_details(self, user_agent: str | None, ip_address: str | None) -> dict[str, Any]:
        return user_details(self._lookup(self._targets.user_details(user_agent, ip_address)))

    def alias_of(self, user_id: str) -> str:
        """The user id ``user_id`` is an alias of (itself when it is none's)."""
        return alias_answer(user_id, self._lookup(self._targets.alias(user_id)))

    def set_alias(self, user_id: str, alias_id: str, timeout: float = 3.0) -> None:
        """Make ``alias_id`` an alias of ``user_id`` (the SDK's ``set_alias``); one try."""
        query = self._targets.account | {"userId": user_id, "aliasId": alias_id}
        url = f"{self.base_url}{SET_ALIAS_PATH}?{urlencode(query)}"
        body = json.dumps({"userId": user_id, "aliasId": alias_id}).encode()
        try:
            response = self._pool.request(
                "POST",
                url,
                body=body,
                headers={"Content-Type": "application/json"},
                timeout=urllib3.Timeout(total=timeout),
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise GatewayError(f"{SET_ALIAS_PATH}: {type(exc).__name__}") from None
        answer = parse_answer(SET_ALIAS_PATH, response.status, response.data)
        if not (isinstance(answer, dict) and answer.get("isAliasSet") is True):
            raise GatewayError(f"{SET_ALIAS_PATH}: the alias was not set")

    def _lookup(self, target: str) -> Any:
        assert self._connections is not None
        path = target.split("?")[0]
        response = self._connections.get(target, self.config.lookup_timeout)
        return parse_answer(path, response.status, response.body)

    def close(self) -> None:
        self._pool.clear()
        if self._connections is not None:
            self._connections.close()


class Connections:
    """Blocking keep-alive connections to the gateway, shared by threads: a request written in
    one call, its answer parsed as it arrives (``wire``); a connection the gateway closed while
    idle costs one retry on a new one, nothing else."""

    def __init__(self, endpoint: Endpoint, max_idle: int = 16) -> None:
        self.endpoint = endpoint
        self._max_idle = max_idle
        self._idle: list[tuple[socket.socket, Reader]] = []
        self._lock = threading.Lock()

    def get(self, target: str, timeout: float) -> Response:
        """GET ``target``; ``GatewayError`` when no answer came within ``timeout``."""
        deadline = time.monotonic() + timeout
        path = target.split("?")[0]
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            heard = False
            try:
                sock, reader = idle or self._connect(deadline)
            except OSError as error:
                raise GatewayError(f"{path}: {type(error).__name__}") from None
            try:
                sock.settimeout(_left(deadline))
                sock.sendall(reader.frame(target))
                while True:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionResetError("the gateway closed the connection")
                    heard = True
                    response = reader.feed(data)
                    if response is not None:
                        break
                    sock.settimeout(_left(deadline))
            except (OSError, ValueError) as error:
                sock.close()
                if idle is not None and not heard and time.monotonic() < deadline:
                    continue  # closed while idle: once more, on a new connection
                raise GatewayError(f"{path}: {type(error).__name__}") from None
            self._put(sock, reader, response.keep_alive)
            return response

    def _connect(self, deadline: float) -> tuple[socket.socket, Reader]:
        endpoint = self.endpoint
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=_left(deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.tls is not None:
            try:
                sock = endpoint.tls.wrap_socket(sock, server_hostname=endpoint.host)
            except BaseException:
                sock.close()
                raise
        return sock, endpoint.reader()

    def _put(self, sock: socket.socket, reader: Reader, keep_alive: bool) -> None:
        with self._lock:
            if keep_alive and len(self._idle) < self._max_idle:
                self._idle.append((sock, reader))
                return
        sock.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock, _ in idle:
            sock.close()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


SETTINGS_PATH = "/server-side/v2-settings"
MEMBERSHIP_PATH = "/check-attribute"
USER_DETAILS_PATH = "/get-user-details"
ALIAS_PATH = "/user-alias/getAliasUserId"
SET_ALIAS_PATH = "/user-alias/setUserAlias"


class LookupTargets:
    """The request targets (path and query) of lookups; the account's part formatted once.
    "@" stays as it is: an e-mail then needs no percent sign."""

    def __init__(self, config: Config) -> None:
        self.account = {"accountId": config.account_id, "sdkKey": config.sdk_key}
        self._account = "&" + urlencode(self.account)
        self._lists: dict[str, str] = {}

    def membership(self, list_id: str, attribute: str) -> str:
        """``urlencode({"attribute": ..., "listId": ...}, safe="@")`` and the account's part;
        only the attribute is quoted anew (a list's part is made once)."""
        tail = self._lists.get(list_id)
        if tail is None:
            tail = f"&{urlencode({'listId': list_id}, safe='@')}{self._account}"
            if len(self._lists) < 256:  # the settings' lists: a handful
                self._lists[list_id] = tail
        return f"{MEMBERSHIP_PATH}?attribute={quote_plus(attribute, safe='@')}{tail}"

    def alias(self, user_id: str) -> str:
        """The SDK's alias lookup: ``userId`` a JSON array of the one id."""
        return f"{ALIAS_PATH}?{self._account[1:]}&{urlencode({'userId': json.dumps([user_id])})}"

    def user_details(self, user_agent: str | None, ip_address: str | None) -> str:
        query = {}
        if user_agent:
            query["userAgent"] = user_agent
        if ip_address:
            query["ipAddress"] = ip_address
        return f"{USER_DETAILS_PATH}?{urlencode(query)}"


def user_details(answer: Any) -> dict[str, Any]:
    """A ``/get-user-details`` answer: its location and parsed user agent (empty if absent)."""
    if not isinstance(answer, dict):
        raise GatewayError(f"{USER_DETAILS_PATH}: unexpected answer")
    return {"location": answer.get("location") or {}, "userAgent": answer.get("userAgent") or {}}


def alias_answer(user_id: str, answer: Any) -> str:
    """The ``userId`` of the record whose ``aliasId`` is ``user_id``, as the SDK reads it;
    ``user_id`` itself when there is none (or the record's id is no id)."""
    if not isinstance(answer, list):
        raise GatewayError(f"{ALIAS_PATH}: unexpected answer")
    for record in answer:
        if isinstance(record, dict) and record.get("aliasId") == user_id:
            return clean_identity(record.get("userId")) or user_id
    return user_id


def member(answer: Any) -> bool:
    """A membership answer as the SDK reads it (``true``, ``{"status": 1}``)."""
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str):
        return answer == "true"
    if isinstance(answer, dict) and "status" in answer:
        return bool(answer["status"])
    raise GatewayError(f"{MEMBERSHIP_PATH}: unexpected answer")


def parse_answer(path: str, status: int, data: bytes) -> Any:
    """A gateway answer's JSON (or bare ``true``/``false``); ``GatewayError`` otherwise."""
    if not 200 <= status < 300:
        raise GatewayError(
            f"{path}: HTTP {status}{_reason(data)}", gateway_fault=not 400 <= status < 500
        )
    if data == b"false" or data == b"true":  # most membership answers: no JSON decoder run
        return data == b"true"
    try:
        return json.loads(data)
    except ValueError:
        text = data.decode("utf-8", "replace").strip()
        if text in ("true", "false"):
            return text == "true"
        raise GatewayError(f"{path}: the answer is not JSON") from None


def _reason(body: bytes) -> str:
    """What the gateway said about an error status (``{"error": ...}`` or text), in short."""
    text = body.decode("utf-8", "replace").strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        text = str(document.get("error") or document.get("message") or "")
    text = " ".join(text.split())[:200]
    return f" ({text})" if text else ""
