"""``@requires_flag``: a view that exists only for visitors who have the flag.

Works on Flask views, Starlette endpoints and FastAPI path operations, sync and async: it reads
the request's flags from the context the middleware sets, and keeps the view's signature (via
``functools.wraps``) so FastAPI still sees its parameters. When the flag is off it raises
``FlagRequired``, which each adapter answers in its framework's own way (a 404 page the app
may style, a redirect).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import quote

from .identity import CONTROL_CHARACTERS
from .request_flags import RequestFlags, get_flags

logger = logging.getLogger("vwo_heap_middleware")
NO_MIDDLEWARE = "@requires_flag(%r) ran outside the middleware: refusing the page"
UNSAFE_REDIRECT = (
    "FlagRequired(%r) was given a redirect_to that is not a same-site relative path: "
    "answering with HTTP %d instead"
)
# What a Location path may keep as it is: printable ASCII but the space ("%" too: already
# encoded stays encoded).
_LOCATION_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[Any], Any]


class FlagRequired(Exception):
    """The view needs flag ``key``, and this visitor does not have it.

    The adapters answer it: ``redirect_to`` (a 302 to that relative path) when set, else an
    error response with ``status``. Under plain WSGI the middleware answers it when the app lets
    it through; an app may also catch it itself. ``redirect_to`` is checked here, where it is
    built: a target that is not a same-site relative path (it may come from the client, a
    ``?next=``) is not followed; the refusal is ``status`` instead, and a warning says why.
    """

    def __init__(self, key: str, status: int = 404, redirect_to: str | None = None) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            status = 404
        if redirect_to is not None:
            try:
                redirect_to = safe_redirect(redirect_to)
            except ValueError:
                logger.warning(UNSAFE_REDIRECT, key, status)
                redirect_to = None
        super().__init__(f"flag {key!r} required (HTTP {status})")
        self.key = key
        self.status = status
        self.redirect_to = redirect_to


def refusal(status: int, redirect_to: str | None) -> str | None:
    """Check how a guard refuses: an HTTP error status, and a same-site relative redirect."""
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), got {status!r}")
    return None if redirect_to is None else safe_redirect(redirect_to)


def safe_redirect(target: str) -> str:
    """A same-site relative path (``/path``; never ``//host``, ``/\\host``, a scheme or a
    control character), with anything beyond printable ASCII percent-encoded (UTF-8), so a
    ``Location`` header can always carry it."""
    if (
        not isinstance(target, str)
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or "\\" in target
        or CONTROL_CHARACTERS.search(target)
    ):
        raise ValueError(f"redirect_to must be a relative path like '/pricing', got {target!r}")
    try:
        return quote(target, safe=_LOCATION_SAFE)
    except UnicodeEncodeError:  # a lone surrogate
        raise ValueError(f"redirect_to must be valid Unicode, got {target!r}") from None


def requires_flag(
    key: str,
    *,
    status: int = 404,
    redirect_to: str | None = None,
    handler: Handler | None = None,
) -> Callable[[F], F]:
    """Serve the view only when flag ``key`` is on for this visitor.

    Otherwise: ``status`` (404 by default: for this visitor the page does not exist), a
    redirect to the relative path ``redirect_to``, or what ``handler(request)`` returns.
    No decision (no middleware, an error) means no page.
    """
    redirect_to = refusal(status, redirect_to)

    def refuse(flags: RequestFlags | None) -> Any:
        if handler is not None:
            return handler(flags.request if flags else None)
        if flags is None:
            logger.warning(NO_MIDDLEWARE, key)
        raise FlagRequired(key, status, redirect_to)

    def decorate(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_guard(*args: Any, **kwargs: Any) -> Any:
                flags = get_flags()
                if flags is not None:
                    await flags.load_async([key])
                if flags is None or not flags.enabled(key):
                    answer = refuse(flags)
                    return await answer if inspect.isawaitable(answer) else answer
                return await view(*args, **kwargs)

            return cast(F, async_guard)

        @functools.wraps(view)
        def guard(*args: Any, **kwargs: Any) -> Any:
            flags = get_flags()
            if flags is None or not flags.enabled(key):
                return refuse(flags)
            return view(*args, **kwargs)

        return cast(F, guard)

    return decorate
