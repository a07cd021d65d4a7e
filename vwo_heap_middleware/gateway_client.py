"""The engine's own client for the VWO gateway: pooled connections, short timeouts, no retries.

The SDK's client retries three times with 2, 4 and 8 s sleeps; on a request path that turns a
gateway hiccup into a 14 s page. Here each call makes one attempt within its timeout and fails
fast; the callers (settings loop, lookups) decide what failing means.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import urllib3

from .config import Config


class GatewayError(Exception):
    """The gateway did not answer usefully: no connection, a timeout, an error status, junk."""


class GatewayClient:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.base_url = config.gateway_url
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=16, retries=False)

    def _get(self, path: str, query: dict[str, str], timeout: float) -> Any:
        url = f"{self.base_url}{path}?{urlencode(query)}"
        try:
            response = self._pool.request(
                "GET", url, timeout=urllib3.Timeout(total=timeout), retries=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise GatewayError(f"{path}: {type(exc).__name__}") from None
        if not 200 <= response.status < 300:
            raise GatewayError(f"{path}: HTTP {response.status}")
        try:
            return json.loads(response.data)
        except ValueError:
            text = response.data.decode("utf-8", "replace").strip()
            if text in ("true", "false"):
                return text == "true"
            raise GatewayError(f"{path}: the answer is not JSON") from None

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
        answer = self._get(
            "/check-attribute",
            {
                "attribute": attribute,
                "listId": list_id,
                "accountId": self.config.account_id,
                "sdkKey": self.config.sdk_key,
            },
            self.config.membership_timeout,
        )
        if isinstance(answer, bool):
            return answer
        if isinstance(answer, str):
            return answer == "true"
        if isinstance(answer, dict) and "status" in answer:
            return bool(answer["status"])
        raise GatewayError("/check-attribute: unexpected answer")

    def user_details(self, user_agent: str | None, ip_address: str | None) -> dict[str, Any]:
        query = {}
        if user_agent:
            query["userAgent"] = user_agent
        if ip_address:
            query["ipAddress"] = ip_address
        answer = self._get("/get-user-details", query, self.config.membership_timeout)
        if not isinstance(answer, dict):
            raise GatewayError("/get-user-details: unexpected answer")
        return answer

    def close(self) -> None:
        self._pool.clear()
