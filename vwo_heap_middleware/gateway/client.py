"""Clients of the real VWO gateway service: pooled connections, short timeouts.

Memberships asked from an event loop have their own client, ``loop.LoopMemberships``.

The SDK's client retries three times with 2, 4 and 8 s sleeps; on a request path that turns a
gateway hiccup into a 14 s page. ``GatewayClient`` (settings, memberships, user details) makes
one attempt within its timeout and fails fast; the callers (settings loop, lookups) decide what
failing means. ``EventClient`` sends batches of events, one try each; the spool retries.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3

from ..config import Config


class Gateway(Protocol):
    """What the engine asks a gateway: the real one (``GatewayClient``) or ``OfflineGateway``."""

    def fetch_settings(self, timeout: float = ...) -> dict[str, Any]: ...
    def is_member(self, list_id: str, attribute: str) -> bool: ...
    def user_details(self, user_agent: str | None, ip_address: str | None) -> dict[str, Any]: ...
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
        json_body: object = None,
        timeout: float = 3.0,
    ) -> Sent:
        headers = dict(headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
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
    """The real gateway's settings, memberships and user details: one try each, within its
    timeout, over pooled keep-alive connections (urllib3)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.base_url = config.gateway_url
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=16, retries=False, ca_certs=config.gateway_ca_file
        )

    def _get(self, path: str, query: dict[str, str], timeout: float) -> Any:
        # "@" left as it is (a query may hold it): an email then needs no "%", which keeps
        # urllib3 on its fast path (it re-checks a "%"-encoded URL byte by byte, ~200 us).
        url = f"{self.base_url}{path}?{urlencode(query, safe='@')}"
        try:
            response = self._pool.request(
                "GET", url, timeout=urllib3.Timeout(total=timeout), retries=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise GatewayError(f"{path}: {type(exc).__name__}") from None
        return parse_answer(path, response.status, response.data)

    def fetch_settings(self, timeout: float = 5.0) -> dict[str, Any]:
        settings = self._get(
            "/server-side/v2-settings",
            {
                "i": self.config.sdk_key,
                "a": self.config.account_id,
                "platform": "server",
                "api-version": "1",
                "s": "prod",
            },
            timeout,
        )
        if not isinstance(settings, dict):
            raise GatewayError("/server-side/v2-settings: the answer is not a settings object")
        return settings

    def is_member(self, list_id: str, attribute: str) -> bool:
        query = membership_query(self.config, list_id, attribute)
        return member(self._get(MEMBERSHIP_PATH, query, self.config.lookup_timeout))

    def user_details(self, user_agent: str | None, ip_address: str | None) -> dict[str, Any]:
        query = {}
        if user_agent:
            query["userAgent"] = user_agent
        if ip_address:
            query["ipAddress"] = ip_address
        answer = self._get("/get-user-details", query, self.config.lookup_timeout)
        if not isinstance(answer, dict):
            raise GatewayError("/get-user-details: unexpected answer")
        return answer

    def close(self) -> None:
        self._pool.clear()


MEMBERSHIP_PATH = "/check-attribute"


def membership_query(config: Config, list_id: str, attribute: str) -> dict[str, str]:
    return {
        "attribute": attribute,
        "listId": list_id,
        "accountId": config.account_id,
        "sdkKey": config.sdk_key,
    }


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
