"""The impressions VWO's SDK sends (``vwo_variationShown``), built as data, byte for byte as the
SDK builds them (``utils/network_util.py``, ``utils/impression_util.py``) but for timestamps and
random ids. The constant parts are made once per settings revision."""

from __future__ import annotations

import functools
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .outcome import Event

VARIATION_SHOWN = "vwo_variationShown"
WEB_UUID = re.compile(r"^[DJ][0-9A-Fa-f]{32}$")
VWO_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://vwo.com")


@dataclass(frozen=True)
class SdkFacts:
    """What the SDK puts in impressions, from its init options and constants."""

    name: str
    version: str
    account_id: str  # the init options' account: visitor UUIDs and the event query
    sdk_key: str


def visitor_uuid(user_id: str, account_id: object, *, web_connectivity: bool = True) -> str:
    """The visitor UUID VWO's SDKs derive from a user id (``uuid_util.get_uuid``): a web
    visitor id (``D``/``J`` + 32 hex) as it is, else ``uuid5`` under the account's namespace."""
    if web_connectivity and WEB_UUID.match(user_id):
        return user_id
    return uuid.uuid5(_namespace(str(account_id)), user_id).hex.upper()


@functools.lru_cache(maxsize=16)
def _namespace(account_id: str) -> uuid.UUID:
    return uuid.uuid5(VWO_NAMESPACE, account_id)


class Impressions:
    """Makes one settings revision's impressions; ``make`` is all that varies per visitor."""

    def __init__(self, sdk: SdkFacts, *, web_connectivity: bool) -> None:
        self._web = web_connectivity
        self._account = sdk.account_id
        self._props = {"vwo_sdkName": sdk.name, "vwo_sdkVersion": sdk.version}
        self._env = sdk.sdk_key
        self._query = {"a": str(sdk.account_id), "p": "FS", "sn": sdk.name, "sv": sdk.version}

    def make(
        self,
        context: Mapping[str, Any],
        user_id: str,
        shown: list[tuple[Any, Any]],
        usage_meta: Mapping[str, Any] | None = None,
    ) -> tuple[Event, ...]:
        """An impression per (campaign id, variation id) shown, in order; the SDK's usage block
        (``vwoMeta``), when given, rides on the first."""
        visitor = visitor_uuid(user_id, self._account, web_connectivity=self._web)
        session = context.get("session_id")
        if session is None or session == 0:
            session = int(time.time())
        agent, ip = context.get("user_agent"), context.get("ip_address")
        events = []
        for campaign_id, variation_id in shown:
            millis = int(time.time() * 1000)
            props: dict[str, Any] = {
                **self._props,
                "vwo_envKey": self._env,
                "id": campaign_id,
                "variation": str(variation_id),
                "isFirst": 1,
            }
            if usage_meta:
                props["vwoMeta"] = usage_meta
                usage_meta = None
            body: dict[str, Any] = {
                "msgId": f"{visitor}-{millis}",
                "visId": visitor,
                "sessionId": session,
                "event": {"props": props, "name": VARIATION_SHOWN, "time": millis},
            }
            if agent is not None:
                body["visitor_ua"] = agent
            if ip is not None:
                body["visitor_ip"] = ip
            body["visitor"] = {"props": {"vwo_fs_environment": self._env}}
            if ip:
                body["visitor"]["props"]["ip"] = ip
            query = {
                "en": VARIATION_SHOWN,
                "a": self._query["a"],
                "eTime": str(millis),
                "random": str(random.random()),
                "p": "FS",
                "visitor_ua": str(agent),
                "visitor_ip": str(ip),
                "sn": self._query["sn"],
                "sv": self._query["sv"],
                "env": self._env,
            }
            events.append(Event({"d": body}, query))
        return tuple(events)
