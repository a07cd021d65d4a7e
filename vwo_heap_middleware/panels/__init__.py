"""Debug-toolbar panels: this request's visitor and each decision with its details.

``summary(flags)`` is what every panel shows (JSON-safe, the identity only as a keyed hash);
``render(summary)`` is its HTML, every value escaped. The panels themselves are thin:
``panels.flask.HeapFlagsPanel`` (Flask-DebugToolbar) and
``django.panel.HeapFlagsPanel`` (django-debug-toolbar).
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from ..identity import short_hash
from ..request_flags import RequestFlags

if TYPE_CHECKING:
    from ..config import Config

TITLE = "Heap flags"


def summary(flags: RequestFlags | None) -> dict[str, Any]:
    """The visitor (hashed identity, user ids, where the identity came from, the sources the
    configuration tries) and each decision made for this request, with its details."""
    if flags is None:
        return {"visitor": None, "decisions": [], "note": "no flags for this request"}
    config = flags.engine.config
    visitor = flags.visitor
    heap = visitor.heap

    def hashed(value: str | None) -> str | None:
        return short_hash(value, key=config.log_key) if value else None

    decisions = []
    for key, decision in sorted(flags.decided().items()):
        details = decision.details
        decisions.append(
            {
                "key": key,
                "enabled": decision.enabled,
                "reason": decision.reason.value,
                "stale": decision.stale,
                "variation": details.variation_name,
                "rule": details.rule_key,
                "rule_type": details.rule_type,
                "in_experiment": details.in_experiment,
                "segments": details.segment_answers,
                "cached": details.cached,
                "evaluator": decision.evaluator,
                "variables": json.dumps(dict(decision.variables), sort_keys=True, default=str),
            }
        )
    return {
        "visitor": {
            "identity": hashed(heap.identity),
            "heap_user_id": heap.user_id,
            "vwo_user_id": hashed(visitor.user_id),
            "source": heap.source,
            "sources_tried": tried_sources(config),
            "custom_variable": config.custom_variable,
        },
        "decisions": decisions,
        "revision": flags.engine.readiness()["revision"],
        "note": None,
    }


def tried_sources(config: Config) -> list[str]:
    """The identity sources that can name the visitor: with client identity not trusted, the
    resolver alone (Heap's cookie then gives only the anonymous user id)."""
    if config.trust_client_identity:
        return list(config.identity_sources)
    tried = [s for s in config.identity_sources if s == "resolver"]
    return [*tried, "cookie (anonymous user id only)"]


def subtitle(data: dict[str, Any]) -> str:
    on = sum(d["enabled"] for d in data["decisions"])
    return f"{on} of {len(data['decisions'])} on"


def render(data: dict[str, Any]) -> str:
    """The panel's HTML: a visitor table and a decisions table, every value escaped."""
    if data.get("visitor") is None:
        return f"<p>{escape(str(data.get('note') or ''))}</p>"
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(_text(value))}</td></tr>"
        for name, value in data["visitor"].items()
    )
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "flag",
            "state",
            "reason",
            "variation",
            "rule",
            "segments",
            "source",
            "variables",
        )
    )
    body = ""
    for d in data["decisions"]:
        state = ("on" if d["enabled"] else "off") + (" (stale)" if d["stale"] else "")
        rule = d["rule"] and f"{d['rule']} ({d['rule_type']})"
        source = ("cache" if d["cached"] else "decided now") + (
            f", {d['evaluator']}" if d["evaluator"] else ""
        )
        segments = ", ".join(f"{k}: {v}" for k, v in d["segments"].items())
        cells = (
            d["key"],
            state,
            d["reason"],
            d["variation"],
            rule,
            segments,
            source,
            d["variables"],
        )
        body += "<tr>" + "".join(f"<td>{escape(_text(c))}</td>" for c in cells) + "</tr>"
    revision = escape(_text(data.get("revision")))
    return (
        f"<h4>Visitor</h4><table>{rows}</table>"
        f"<h4>Decisions (settings revision {revision})</h4>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
