"""The server's decisions for the browser: a payload of the flags ``Config.client_flags``
allows, written into the page as JSON no markup can break out of, and read there by a small ES
module shipped in this package (``STATIC_DIR/vwo_heap/flags.js``).

With ``vwo_storage=True`` the payload also carries each decision in the shape VWO's web SDK
(``vwo-fme-node-sdk``'s browser build) stores it, keyed ``<flag>_<user id>``; the module's
``seedVwoStorage`` writes them where that SDK looks before it evaluates, so it serves the
server's variation without a network call or a second impression.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from .config import Config
from .decision import FlagDecision
from .evaluation.impressions import visitor_uuid

logger = logging.getLogger("vwo_heap_middleware")
STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Serve this directory (or copy ``vwo_heap/flags.js`` from it) to reach the browser module."""
ELEMENT_ID = "vwo-heap-flags"
# What json.dumps leaves that could end a <script> element or a JavaScript string early
# (Django's json_script escapes the first three; U+2028/U+2029 for older JavaScript).
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class SafeHTML(str):
    """Markup the template engines insert as it is (``__html__``: Jinja's ``Markup`` and
    Django's ``conditional_escape`` both honour it)."""

    def __html__(self) -> str:
        return str(self)


def client_payload(
    decided: Mapping[str, FlagDecision],
    user_id: str | None,
    account_id: str,
    vwo_storage: bool = False,
) -> dict[str, Any]:
    """The browser's view of ``decided`` (the allowed flags, ``RequestFlags.client_payload``):
    ``{"flags": {key: {enabled, variables, variation}}, "userId", "uuid", "revision"}``, and
    with ``vwo_storage`` the web SDK's stored decisions (``"vwo"``). JSON-safe."""
    revision = next((d.details.revision for d in decided.values() if d.details.revision), None)
    payload: dict[str, Any] = {
        "flags": {
            key: {
                "enabled": decision.enabled,
                "variables": dict(decision.variables) if decision.enabled else {},
                "variation": decision.details.variation_name,
            }
            for key, decision in decided.items()
        },
        "userId": user_id,
        "uuid": visitor_uuid(user_id, account_id) if user_id else None,
        "revision": revision,
    }
    if vwo_storage and user_id:
        stored = (vwo_stored(d, user_id) for d in decided.values())
        payload["vwo"] = {f"{entry['featureKey']}_{user_id}": entry for entry in stored if entry}
    return payload


def client_user_id(user_id: str | None, config: Config) -> str | None:
    """The user id a page may carry (``Config.client_user_id``): as it is, an HMAC of it keyed
    with the SDK key (the same on every page and worker, not reversible without the key; the
    browser buckets it as its own id), or none."""
    if user_id is None or config.client_user_id == "raw":
        return user_id
    if config.client_user_id == "none":
        return None
    key = str(config.sdk_key).encode("utf-8")
    return hmac.new(key, user_id.encode("utf-8", "surrogatepass"), "sha256").hexdigest()[:32]


def vwo_stored(decision: FlagDecision, user_id: str) -> dict[str, Any] | None:
    """``decision`` as VWO's web SDK keeps it in its storage (its ``StorageDecorator``): the
    rollout, or the A/B test or personalize rule, and the variation. None when no rule gave the
    flag (the SDK keeps nothing then either, and decides it itself)."""
    details = decision.details
    if not decision.enabled or details.campaign_key is None:
        return None
    entry: dict[str, Any] = {
        "featureKey": decision.key,
        "featureId": details.feature_id,
        "userId": user_id,
    }
    if details.rule_type == "rollout":
        entry.update(
            rolloutId=details.campaign_id,
            rolloutKey=details.campaign_key,
            rolloutVariationId=details.variation_id,
        )
    else:
        entry.update(
            experimentId=details.campaign_id,
            experimentKey=details.campaign_key,
            experimentVariationId=details.variation_id,
        )
    return entry


def script_tag(
    payload: dict[str, Any], element_id: str = ELEMENT_ID, nonce: str | None = None
) -> SafeHTML:
    """``<script type="application/json" id=...>`` holding ``payload``: ``<``, ``>``, ``&``,
    U+2028 and U+2029 escaped, so no value (a variable holding ``</script>``) ends it; the
    attributes escaped; ``nonce`` for a Content-Security-Policy."""
    data = strict_json(payload, separators=(",", ":"), default=str).translate(_SCRIPT_SAFE)
    attributes = f' id="{escape(element_id)}"'
    if nonce:
        attributes += f' nonce="{escape(nonce)}"'
    return SafeHTML(f'<script type="application/json"{attributes}>{data}</script>')


NOT_FINITE = "a non-finite number (infinity or NaN) cannot be JSON: written as null (said once)"
_said_not_finite: list[bool] = []


def strict_json(value: Any, **options: Any) -> str:
    """``json.dumps`` as strict JSON, for ``JSON.parse`` and other strict parsers (the page,
    the CLI): settings may hold ``1e400`` (infinity); a non-finite number becomes ``null``."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        if not _said_not_finite:
            _said_not_finite.append(True)
            logger.warning(NOT_FINITE)
        return json.dumps(_finite(value), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
