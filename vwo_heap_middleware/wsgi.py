"""Plain WSGI middleware: the request's flags at ``environ["vwo_heap.flags"]``.

::

    app = HeapFlagsWSGIMiddleware(app, engine=engine)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .context import RequestFacts, build_visitor, resolve_identity
from .engine import FlagEngine
from .request_flags import RequestFlags, current_flags, merge_vary

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ENVIRON_KEY = "vwo_heap.flags"


def facts_from_environ(environ: WSGIEnvironment, identity_header: str) -> RequestFacts:
    """What the middleware reads from a WSGI request (header values are latin-1 in WSGI)."""
    raw_identity = environ.get("HTTP_" + identity_header.upper().replace("-", "_"))
    return RequestFacts(
        cookie=environ.get("HTTP_COOKIE"),
        identity_header=raw_identity.encode("latin-1", "replace") if raw_identity else None,
        user_agent=environ.get("HTTP_USER_AGENT"),
        peer=environ.get("REMOTE_ADDR"),
        forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
        forwarded=environ.get("HTTP_FORWARDED"),
    )


def add_flag_headers(flags: RequestFlags, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with ``Vary`` merged and the opt-in debug headers appended."""
    added = flags.response_headers()
    if not added:
        return headers
    vary = [value for name, value in added if name == "Vary"]
    result = [(n, v) for n, v in headers if not (vary and n.lower() == "vary")]
    if vary:
        existing = ", ".join(v for n, v in headers if n.lower() == "vary")
        result.append(("Vary", merge_vary(existing, vary)))
    result += [(n, v) for n, v in added if n != "Vary"]
    return result


class HeapFlagsWSGIMiddleware:
    """Evaluates ``Config.flags`` once per request, for any WSGI application."""

    def __init__(self, app: WSGIApplication, *, engine: FlagEngine) -> None:
        if not isinstance(engine, FlagEngine):
            raise TypeError("HeapFlagsWSGIMiddleware needs engine=FlagEngine(config)")
        self.app = app
        self.engine = engine
        engine.start()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        config = self.engine.config
        facts = facts_from_environ(environ, config.identity_header)
        visitor = build_visitor(config, facts, environ, resolve_identity(config, environ))
        flags = RequestFlags(self.engine, visitor, request=environ, refuse=_refuse)
        flags.load(config.flags)
        environ[ENVIRON_KEY] = flags

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            return start_response(status, add_flag_headers(flags, headers), exc_info)

        token = current_flags.set(flags)
        try:
            return self.app(environ, start_with_headers)
        finally:
            current_flags.reset(token)


class FlagRequired(Exception):
    """Raised by ``@requires_flag`` under plain WSGI; your app maps it to a response."""

    def __init__(self, status: int, redirect_to: str | None) -> None:
        super().__init__(f"flag required (HTTP {status})")
        self.status = status
        self.redirect_to = redirect_to


def _refuse(status: int, redirect_to: str | None) -> Any:
    raise FlagRequired(status, redirect_to)
