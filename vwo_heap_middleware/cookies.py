"""Split a Cookie header the way browsers send it, without ``http.cookies``.

``SimpleCookie.load()`` drops every cookie when an earlier one holds a space, a stray quote or
JSON, which real Cookie headers do. Here each ``name=value`` pair stands alone: a broken pair is
skipped, the rest still count. Several Cookie headers count as one whichever way the server
joined them (ASGI servers with ``; ``, gunicorn and werkzeug with ``,``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

logger = logging.getLogger("vwo_heap_middleware")

MAX_COOKIE_HEADER = 64 * 1024
COOKIE_CUT = (
    "a Cookie header of %d characters: only its first 64 KiB are read, so a Heap cookie past "
    "them is not seen (said once)"
)
_said: list[bool] = []
# A pair ends at ";", or at "," when a new name=value follows (two headers, joined by a server).
_PAIRS = re.compile(r";|,(?=\s*[^\s;,=]+=)")


def iter_cookies(header: str) -> Iterator[tuple[str, str]]:
    """Yield ``(name, value)`` in header order; values are raw (not unquoted or decoded)."""
    if len(header) > MAX_COOKIE_HEADER:
        if not _said:
            _said.append(True)
            logger.debug(COOKIE_CUT, len(header))
        header = header[:MAX_COOKIE_HEADER]
    for pair in _PAIRS.split(header) if "," in header else header.split(";"):
        name, sep, value = pair.partition("=")
        if not sep:
            continue
        name = name.strip()
        if name:
            yield name, value.strip()
