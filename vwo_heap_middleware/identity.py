"""The visitor's Heap identity, read from Heap's browser cookies or a request header.

Heap's browser SDK stores the visitor in a URL-encoded JSON cookie: ``_hp5_meta.<app id>``
(heap.js v5) or ``_hp2_id.<app id>`` (classic heap.js). ``identity`` is set once the page
called ``heap.identify(...)``; ``userId`` is Heap's own visitor id. Both cookies are written by
JavaScript in the browser, so anyone can put any identity in them (see ``Config``).

Nothing here raises on what a client sends: unreadable input means "no identity".

A Cookie header is split pair by pair, without ``http.cookies``: ``SimpleCookie.load()`` drops
every cookie when an earlier one holds a space, a stray quote or JSON, which real Cookie headers
do. Identities never reach a log: ``short_hash`` stands in for them, keyed per deployment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger("vwo_heap_middleware")

MAX_IDENTITY_LENGTH = 255
MAX_COOKIE_VALUE = 4096
V5_PREFIX = "_hp5_meta."
V4_PREFIX = "_hp2_id."
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NO_IDENTITY = frozenset({"null", "undefined"})
_USER_ID = re.compile(r"^[0-9]{1,20}$")


@dataclass(frozen=True, slots=True)
class HeapIdentity:
    """Who Heap says the visitor is. ``identity`` is None for anonymous visitors."""

    identity: str | None = None
    user_id: str | None = None
    source: str = "none"

    @property
    def is_identified(self) -> bool:
        return self.identity is not None

    def beside(self, cookie: HeapIdentity) -> HeapIdentity:
        """This identity with the Heap cookie's ``userId`` (the id a login may be linked to)."""
        return HeapIdentity(self.identity, cookie.user_id, self.source)


ANONYMOUS = HeapIdentity()


def clean_identity(value: object) -> str | None:
    """An identity as Heap allows it, or None: 1-255 characters, no control characters, valid
    Unicode (a JSON-escaped lone surrogate cannot be sent on, shown or hashed).

    ``null`` and ``undefined`` (any case), which Heap warns against, mean no identity. Case and
    unicode are kept as they are; an identity is compared exactly.
    """
    return value if identity_refusal(value) is None else None  # type: ignore[return-value]


def identity_refusal(value: object) -> str | None:
    """Why ``value`` is not an identity (see ``clean_identity``), or None when it is one."""
    if not isinstance(value, str):
        return "not a string"
    if not value.strip():
        return "blank"
    if len(value) > MAX_IDENTITY_LENGTH:
        return f"longer than {MAX_IDENTITY_LENGTH} characters"
    if CONTROL_CHARACTERS.search(value):
        return "it holds control characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid Unicode (a lone surrogate)"
    if value.lower() in _NO_IDENTITY:
        return f"{value.lower()!r} means no identity to Heap"
    return None


@functools.lru_cache(maxsize=2048)  # a returning visitor sends the same value on every request
def parse_heap_cookie(raw_value: str, source: str) -> HeapIdentity | None:
    """Decode one Heap cookie value; None when it is not a readable Heap cookie. Servers give
    header bytes as latin-1 text: raw (not percent-encoded) bytes are UTF-8, as in the identity
    header, so ``josé`` is ``josé`` whichever way it came."""
    if len(raw_value) > MAX_COOKIE_VALUE:
        return None
    try:  # numbers stay strings: a numeric identity keeps its digits, and no huge-int parsing
        if not raw_value.isascii():
            raw_value = raw_value.encode("latin-1").decode("utf-8")
        document = json.loads(unquote(raw_value, errors="strict"), parse_int=str, parse_float=str)
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        return None
    if not isinstance(document, dict):
        return None
    user_id = document.get("userId")
    return HeapIdentity(
        identity=clean_identity(document.get("identity")),
        user_id=user_id if isinstance(user_id, str) and _USER_ID.match(user_id) else None,
        source=source,
    )


def identity_from_cookies(cookie_header: str | None, app_id: str | None = None) -> HeapIdentity:
    """The Heap visitor in a Cookie header.

    With ``app_id`` only that Heap app's cookies count. A v5 cookie wins over a v4 one (a site
    that moved to heap.js v5 leaves a stale v4 cookie behind). Among cookies of one version
    (several Heap apps, or one name twice) an identified visitor wins over an anonymous one,
    then the cookie that comes first in the header.
    """
    if not cookie_header or "_hp" not in cookie_header:
        return ANONYMOUS
    best: HeapIdentity | None = None
    best_rank = -1
    for name, value in iter_cookies(cookie_header):
        if name.startswith(V5_PREFIX):
            version, app = 2, name[len(V5_PREFIX) :]
        elif name.startswith(V4_PREFIX):
            version, app = 0, name[len(V4_PREFIX) :]
        else:
            continue
        if app_id is not None and app != app_id:
            continue
        if version + 1 <= best_rank:  # cannot beat what we have: skip the decoding
            continue
        found = parse_heap_cookie(value, "cookie:v5" if version else "cookie:v4")
        if found is None:
            continue
        rank = version + (1 if found.is_identified else 0)
        if rank > best_rank:
            best, best_rank = found, rank
    return best or ANONYMOUS


def identity_from_header(value: str | bytes | None) -> HeapIdentity:
    """An identity sent in a request header by an app or mobile client (UTF-8).

    Leading and trailing spaces and tabs are not part of it (servers differ in keeping them).
    A value with a comma names nobody: it is what servers make of the header sent twice.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return ANONYMOUS
    if value is None or "," in value:
        return ANONYMOUS
    identity = clean_identity(value.strip(" \t"))
    return HeapIdentity(identity=identity, source="header") if identity else ANONYMOUS


def identity_from_resolver(value: Any) -> HeapIdentity:
    """What the app's trusted resolver returned: an identity string, or None for anonymous."""
    identity = clean_identity(value)
    return HeapIdentity(identity=identity, source="resolver") if identity else ANONYMOUS


# -- Cookie headers ----------------------------------------------------------------------

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


# -- stand-ins for identities --------------------------------------------------------------


def fingerprint(data: bytes, *, size: int = 16, key: bytes = b"") -> bytes:
    """A BLAKE2b digest of ``size`` bytes (keyed when ``key`` is given): what is kept or logged
    in place of identities, user ids and request facts."""
    return hashlib.blake2b(data, digest_size=size, key=key).digest()


def short_hash(value: str, *, key: bytes) -> str:
    """A 12-hex-digit stand-in for an identity in logs (identities are often emails), keyed
    (``Config.log_key``): stable within a deployment, but nobody can match a log line against a
    guessed identity by hashing it."""
    return fingerprint(value.encode("utf-8", "surrogatepass"), size=6, key=key).hex()
