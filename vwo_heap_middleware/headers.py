"""The headers a response carries because its request read the visitor: ``Vary`` naming every
request header the visitor can come from, ``Cache-Control: private``, and the opt-in debug
headers. ``RequestFlags.response_headers()`` says which; each adapter writes them in its
framework's way, with the same rule (``ResponseHeaders.to_append``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from .decision import FlagDecision


@dataclass(frozen=True)
class ResponseHeaders:
    """What a response must carry: ``vary`` (to merge into ``Vary``) and ``extra`` headers."""

    vary: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    cache_control: str | None = None  # "private": made private (``private_cache_control``)

    def __bool__(self) -> bool:
        return bool(self.vary or self.extra or self.cache_control)

    @functools.cached_property
    def raw(self) -> tuple[tuple[bytes, bytes], ...]:
        """These headers as an ASGI response without ``Vary`` or ``Cache-Control`` of its own
        gets them: encoded once."""
        return tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.to_append([], None)
        )

    @functools.cached_property
    def appended(self) -> tuple[tuple[str, str], ...]:
        """These headers as a response without ``Vary`` or ``Cache-Control`` of its own gets
        them (a WSGI response): made once."""
        return tuple(self.to_append([], None))

    def to_append(self, vary: list[str], cache_control: str | None) -> list[tuple[str, str]]:
        """The headers to add to a response whose ``Vary`` values (``vary``, to be replaced by
        the merged one) and ``Cache-Control`` (to be replaced when one is added) are given;
        every adapter's rule."""
        appended = [("Vary", merge_vary(", ".join(vary), self.vary))] if self.vary else []
        private = private_cache_control(cache_control) if self.cache_control else None
        if private is not None:
            appended.append(("Cache-Control", private))
        return appended + list(self.extra)


def private_cache_control(existing: str | None) -> str | None:
    """The ``Cache-Control`` of a response that read the visitor: ``private``, or the view's
    own made private (``public`` dropped) unless it says ``private`` or ``no-store`` already
    (then None: left as it is). A view's ``max-age=60`` alone would let a shared cache serve
    one visitor's page, and their flags, to the next."""
    if existing is None:
        return "private"
    directives = [d.strip() for d in existing.split(",") if d.strip()]
    names = [d.partition("=")[0].strip().lower() for d in directives]
    if "private" in names or "no-store" in names:
        return None
    kept = [d for d, name in zip(directives, names, strict=True) if name != "public"]
    return ", ".join(["private", *kept])


@functools.lru_cache(maxsize=64)
def read_headers(vary: tuple[str, ...], user_agent: bool, private: bool) -> ResponseHeaders:
    """What a response that read the visitor carries: made once per configuration."""
    return ResponseHeaders(
        (*vary, "User-Agent") if user_agent else vary, (), "private" if private else None
    )


def debug_entry(key: str, decision: FlagDecision) -> str:
    """``key=on;targeted[;stale][;native|;sdk][;cached][;rule=..;variation=..][;segment=..]``:
    what ``X-Flags`` says of one decision (``segment=<list id>:<answer>`` per Heap segment
    consulted). Anything beyond ``[A-Za-z0-9_.-~]`` is percent-encoded, so the header stays one
    safe line."""
    parts = ["on" if decision.enabled else "off", decision.reason.value]
    if decision.stale:
        parts.append("stale")
    if decision.evaluator:
        parts.append(decision.evaluator)
    details = decision.details
    if details.cached:
        parts.append("cached")
    if details.rule_key is not None:
        parts.append(f"rule={quote(details.rule_key, safe='')}")
    if details.variation_name is not None:
        parts.append(f"variation={quote(details.variation_name, safe='')}")
    parts += [f"segment={quote(list_id, safe='')}:{answer}" for list_id, answer in details.segments]
    return f"{quote(key, safe='')}={';'.join(parts)}"


def merge_vary(existing: str | None, added: Iterable[str]) -> str:
    """``Vary`` with ``added`` appended once each (case-insensitive), keeping what was there."""
    values = [v.strip() for v in (existing or "").split(",") if v.strip()]
    seen = {v.lower() for v in values}
    for value in added:
        if value.lower() not in seen:
            values.append(value)
            seen.add(value.lower())
    return ", ".join(values)
