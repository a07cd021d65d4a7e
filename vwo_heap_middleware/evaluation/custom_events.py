"""Conversions and visitor attributes: the events VWO's SDK sends for ``track_event`` and
``set_attribute``, built as data (``wingify/utils/network_util.py``,
``get_track_goal_payload_data`` and ``get_attribute_payload_data``), checked as input first.

Pure: what goes in is the settings revision's metrics, the SDK's facts and the visitor; what
comes out is an ``Event`` for the spool, or why there is none (``Tracked``).
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .flag_index import FlagIndex
from .impressions import SdkFacts, visitor_uuid
from .impressions import compact_json as _dumps
from .outcome import Event

logger = logging.getLogger("vwo_heap_middleware")

SYNC_VISITOR_PROP = "vwo_syncVisitorProp"
MAX_NAME = 255  # characters of an event name or a property's name
MAX_TEXT = 1024  # characters of a string value
MAX_PROPERTIES = 64  # properties of one event, attributes of one call
MAX_INTEGER = 2**53  # what a JSON reader (the browser's, VWO's) keeps exactly
RESERVED = frozenset(
    {"vwo_sdkName", "vwo_sdkVersion", "vwo_envKey", "isCustomEvent", "variation", "id"}
)
"""The SDK lets a custom property replace these; a conversion that did would not count."""


class TrackStatus(str, enum.Enum):
    QUEUED = "queued"  # spooled: sent in the next batch (journaled with a state directory)
    UNKNOWN_EVENT = "unknown_event"  # no flag's (or holdout's) metrics name it: VWO ignores it
    INVALID = "invalid"  # a name, property or attribute that cannot be sent as it is
    NO_USER = "no_user"  # the visitor has no VWO user id
    NOT_READY = "not_ready"  # no settings loaded yet


@dataclass(frozen=True)
class Tracked:
    """What became of a conversion or attribute sync: true when it was queued for VWO."""

    status: TrackStatus
    detail: str = ""

    def __bool__(self) -> bool:
        return self.status is TrackStatus.QUEUED


QUEUED = Tracked(TrackStatus.QUEUED)


NOT_SENT = "%s not sent to VWO (%s: %s; said once per kind)"
_said: set[tuple[str, str]] = set()


def for_visitor(
    index: FlagIndex | None,
    sdk: SdkFacts,
    context: Mapping[str, Any] | None,
    name: str | None,
    values: object,
) -> Event | Tracked:
    """The event for a conversion (``name``: the event) or, ``name`` None, an attribute sync,
    for a visitor's ``context``; or why there is none (logged once per kind and detail)."""
    conversion_ = name is not None
    kind = "a conversion" if conversion_ else "an attribute sync"
    if conversion_ and values is None:
        values = {}  # a conversion may have no properties; an attribute sync needs some
    refused = refusal_of_name(name) if conversion_ else None
    if refused is None:
        refused = refusal_of_values(values, "properties" if conversion_ else "attributes")
    if refused is None and not conversion_ and not values:
        refused = "there are no attributes to set"
    if refused is not None:
        result = Tracked(TrackStatus.INVALID, refused)
    elif index is None:
        result = Tracked(TrackStatus.NOT_READY, "no VWO settings loaded yet")
    elif context is None:
        result = Tracked(TrackStatus.NO_USER, "the visitor has no VWO user id")
    elif name is not None and name not in index.metrics:
        result = Tracked(TrackStatus.UNKNOWN_EVENT, f"no flag's metrics name {name[:60]!r}")
    else:
        assert isinstance(values, Mapping)  # refusal_of_values said so
        web = index.web_connectivity
        if name is not None:
            return conversion(sdk, context, name, values, web_connectivity=web)
        return attributes(sdk, context, values, web_connectivity=web)
    said = (result.status.value, result.detail)
    if said not in _said and len(_said) < 1024:
        _said.add(said)
        logger.warning(NOT_SENT, kind, result.status.value, result.detail)
    return result


def refusal_of_name(name: object) -> str | None:
    """Why ``name`` cannot be an event's or a property's name, or None."""
    if not isinstance(name, str):
        return f"a name must be a string, got {type(name).__name__}"
    if not name or len(name) > MAX_NAME or not name.isprintable():
        return f"a name must be 1-{MAX_NAME} printable characters"
    return None


def refusal_of_values(values: object, what: str) -> str | None:
    """Why ``values`` (properties or attributes) cannot be sent, or None: a mapping of at most
    ``MAX_PROPERTIES`` names to a string, a whole number, a finite number or a bool."""
    if not isinstance(values, Mapping):
        return f"{what} must be a mapping of names to values, got {type(values).__name__}"
    if len(values) > MAX_PROPERTIES:
        return f"at most {MAX_PROPERTIES} {what}, got {len(values)}"
    for name, value in values.items():
        refused = refusal_of_name(name)
        if refused is None and name in RESERVED and what == "properties":
            refused = f"{name!r} is VWO's own property"
        if refused is None:
            refused = _refusal_of_value(value)
        if refused is not None:
            return f"{what} {str(name)[:40]!r}: {refused}"
    return None


def _refusal_of_value(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_INTEGER else "an integer beyond ±2**53"
    if isinstance(value, float):
        return None if math.isfinite(value) else "a number must be finite"
    if isinstance(value, str):
        if len(value) > MAX_TEXT or not value.isprintable():
            return f"a string must be at most {MAX_TEXT} printable characters"
        return None
    return f"values are str, int, float or bool, got {type(value).__name__}"


def conversion(
    sdk: SdkFacts,
    context: Mapping[str, Any],
    name: str,
    properties: Mapping[str, Any],
    *,
    web_connectivity: bool,
) -> Event:
    """The SDK's ``track_event`` event for this visitor (checked input; see ``Tracked``)."""
    props = {"isCustomEvent": True, "variation": 1, "id": 1, **properties}
    return _event(sdk, context, name, props, {}, web_connectivity)


def attributes(
    sdk: SdkFacts, context: Mapping[str, Any], values: Mapping[str, Any], *, web_connectivity: bool
) -> Event:
    """The SDK's ``set_attribute`` event: the attributes in the visitor's props."""
    props = {"isCustomEvent": True, "vwo_fs_environment": sdk.sdk_key}
    return _event(sdk, context, SYNC_VISITOR_PROP, props, values, web_connectivity)


def _event(
    sdk: SdkFacts,
    context: Mapping[str, Any],
    name: str,
    props: Mapping[str, Any],
    visitor_props: Mapping[str, Any],
    web_connectivity: bool,
) -> Event:
    """``_get_event_base_payload``, in the SDK's key order, with ``props`` after its own: one
    string format, what is the same for every event of an SDK made once (as impressions are)."""
    user_id = str(context["id"])
    visitor = _dumps(visitor_uuid(user_id, sdk.account_id, web_connectivity=web_connectivity))
    millis = int(time.time() * 1000)
    session = context.get("session_id") or int(time.time())
    agent, ip = context.get("user_agent"), context.get("ip_address")
    head, environment = _sdk_json(sdk)
    tail = "" if agent is None else f',"visitor_ua":{_dumps(agent)}'
    tail += "" if ip is None else f',"visitor_ip":{_dumps(ip)}'
    extra = _dumps(dict(visitor_props))[1:-1]
    data = (
        f'{{"d":{{"msgId":{visitor[:-1]}-{millis}","visId":{visitor},'
        f'"sessionId":{_dumps(session)},"event":{{"props":{{{head},{_dumps(dict(props))[1:-1]}}},'
        f'"name":{_dumps(name)},"time":{millis}}}{tail},"visitor":{{"props":'
        f'{{"vwo_fs_environment":{environment}{"," if extra else ""}{extra}}}}}}}}}'
    )
    query = {
        "en": name,
        "a": str(sdk.account_id),
        "eTime": str(millis),
        "random": str(random.random()),
        "p": "FS",
        "visitor_ua": str(agent),
        "visitor_ip": str(ip),
        "sn": sdk.name,
        "sv": sdk.version,
        "env": sdk.sdk_key,
    }
    return Event(data.encode(), query)


@functools.lru_cache(maxsize=16)
def _sdk_json(sdk: SdkFacts) -> tuple[str, str]:
    """The SDK's own event props, and its environment (the SDK key), as JSON: made once."""
    head = (
        f'"vwo_sdkName":{_dumps(sdk.name)},"vwo_sdkVersion":{_dumps(sdk.version)},'
        f'"vwo_envKey":{_dumps(sdk.sdk_key)}'
    )
    return head, _dumps(sdk.sdk_key)
