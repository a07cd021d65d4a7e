"""``@requires_flag``: a view that exists only for visitors who have the flag.

Works on Flask views, Starlette endpoints and FastAPI path operations, sync and async: it reads
the request's flags from the context the middleware sets, and keeps the view's signature (via
``functools.wraps``) so FastAPI still sees its parameters.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .request_flags import RequestFlags, get_flags

logger = logging.getLogger("vwo_heap_middleware")
NO_MIDDLEWARE = "@requires_flag(%r) ran outside the middleware: refusing the page"

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[Any], Any]


def safe_redirect(target: str) -> str:
    """Only same-site relative paths: ``/path``, never ``//host``, ``/\\host`` or a scheme."""
    if (
        not isinstance(target, str)
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(c in target for c in "\r\n\t\\")
    ):
        raise ValueError(f"redirect_to must be a relative path like '/pricing', got {target!r}")
    return target


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
    if redirect_to is not None:
        redirect_to = safe_redirect(redirect_to)
    if not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), got {status}")

    def refuse(flags: RequestFlags | None) -> Any:
        if handler is not None:
            return handler(flags.request if flags else None)
        if flags is None or flags.refuse is None:
            logger.warning(NO_MIDDLEWARE, key)
            return _plain_refusal(status, redirect_to)
        return flags.refuse(status, redirect_to)

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


def _plain_refusal(status: int, redirect_to: str | None) -> Any:
    """No middleware saw this request: refuse in whichever framework is serving it."""
    try:
        import flask

        if flask.has_request_context():
            flask.abort(status)
    except ImportError:
        pass
    try:
        from starlette.exceptions import HTTPException
    except ImportError:
        raise PermissionError(f"flag required (HTTP {status})") from None
    raise HTTPException(status_code=status)
