"""The impressions VWO's SDK sends (``vwo_variationShown``), built as data, byte for byte as the
SDK builds them (``utils/network_util.py``, ``utils/impression_util.py``) but for timestamps and
random ids. What is the same for every impression of a settings revision is formatted once; an
impression is then one string format, its JSON written in the order the SDK writes its keys."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .outcome import VARIATION_SHOWN, Event

WEB_UUID = re.compile(r"^[DJ][0-9A-Fa-f]{32}$")
VWO_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://vwo.com")
_encode = json.JSONEncoder(separators=(",", ":")).encode


def compact_json(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``: one encoder for every call, and an int
    (a campaign id, a session) written as JSON writes it, without an encoder run."""
    return int.__repr__(value) if type(value) is int else _encode(value)


_dumps = compact_json


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
    return uuid5_hex(_namespace(str(account_id)), user_id)


def uuid5_hex(namespace: bytes, name: str) -> str:
    """``uuid.uuid5(UUID(bytes=namespace), name).hex.upper()``, without making UUID objects
    (a new visitor's impression needs one or two)."""
    digest = bytearray(hashlib.sha1(namespace + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex().upper()


@functools.lru_cache(maxsize=16)
def _namespace(account_id: str) -> bytes:
    return uuid.uuid5(VWO_NAMESPACE, account_id).bytes


class Impressions:
    """Makes one settings revision's impressions; ``make`` is all that varies per visitor."""

    def __init__(self, sdk: SdkFacts, *, web_connectivity: bool) -> None:
        self._web = web_connectivity
        self._account = sdk.account_id
        self._props = (
            f'"vwo_sdkName":{_dumps(sdk.name)},"vwo_sdkVersion":{_dumps(sdk.version)},'
            f'"vwo_envKey":{_dumps(sdk.sdk_key)},'
        )
        self._environment = _dumps(sdk.sdk_key)
        self._query = {"a": str(sdk.account_id), "sn": sdk.name, "sv": sdk.version}
        self._env = sdk.sdk_key

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
        session_json, visitor_json = _dumps(session), _dumps(visitor)  # a web id may end in \n
        tail = ""
        if agent is not None:
            tail += f',"visitor_ua":{_dumps(agent)}'
        if ip is not None:
            tail += f',"visitor_ip":{_dumps(ip)}'
        tail += f',"visitor":{{"props":{{"vwo_fs_environment":{self._environment}'
        tail += f',"ip":{_dumps(ip)}}}}}}}}}' if ip else "}}}}"
        events = []
        for campaign_id, variation_id in shown:
            millis = int(time.time() * 1000)
            variation = str(variation_id)
            meta = f',"vwoMeta":{_dumps(usage_meta)}' if usage_meta else ""
            usage_meta = None
            data = (
                f'{{"d":{{"msgId":{_dumps(f"{visitor}-{millis}")},"visId":{visitor_json},'
                f'"sessionId":{session_json},"event":{{"props":{{{self._props}'
                f'"id":{_dumps(campaign_id)},"variation":{_dumps(variation)},"isFirst":1{meta}}},'
                f'"name":"{VARIATION_SHOWN}","time":{millis}}}{tail}'
            )
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
            shown_key = (visitor, str(campaign_id), variation)
            events.append(Event(data.encode(), query, shown_key))
        return tuple(events)
