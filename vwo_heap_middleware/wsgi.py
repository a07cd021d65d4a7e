"""Plain WSGI middleware: the request's flags at ``environ["vwo_heap.flags"]``.

::

    app = HeapFlagsWSGIMiddleware(app, engine=engine)
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .engine import FlagEngine
from .guards import FlagRequired, requires_flag
from .headers import ResponseHeaders
from .request_flags import open_request
from .visitor import RequestFacts

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ENVIRON_KEY",
    "FlagRequired",
    "HeapFlagsWSGIMiddleware",
    "requires_flag",
    "with_flag_headers",
]

ENVIRON_KEY = "vwo_heap.flags"
_MERGED = frozenset({"vary", "cache-control"})  # the response's own, merged with the flags'


def with_flag_headers(
    added: ResponseHeaders, headers: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``headers`` with ``Vary`` merged, ``Cache-Control`` made private and the opt-in debug
    headers appended."""
    if not added:
        return headers
    if not any(name.lower() in _MERGED for name, _ in headers):  # the usual response
        return [*headers, *added.appended]
    vary = [v for n, v in headers if n.lower() == "vary"] if added.vary else []
    cache_control = [v for n, v in headers if n.lower() == "cache-control"]
    appended = added.to_append(vary, ", ".join(cache_control) if cache_control else None)
    replaced = {"vary"} if added.vary else set()
    if any(name == "Cache-Control" for name, _ in appended):
        replaced.add("cache-control")
    return [(n, v) for n, v in headers if n.lower() not in replaced] + appended


class HeapFlagsWSGIMiddleware:
    """Decides ``Config.flags`` once per request, for any WSGI application.

    ``@requires_flag`` raises ``FlagRequired``; when the app lets it through, this middleware
    answers it (a 302 to ``redirect_to``, else a plain error with its status).
    """

    def __init__(self, app: WSGIApplication, *, engine: FlagEngine) -> None:
        if not isinstance(engine, FlagEngine):
            raise TypeError("HeapFlagsWSGIMiddleware needs engine=FlagEngine(config)")
        self.app = app
        self.engine = engine
        engine.start()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        facts = RequestFacts.from_wsgi(environ, self.engine.config.identity_header)
        with open_request(self.engine, facts, environ) as flags:
            environ[ENVIRON_KEY] = flags

            def start_with_headers(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None
            ) -> Any:
                return start_response(
                    status, with_flag_headers(flags.response_headers(), headers), exc_info
                )

            try:
                return self.app(environ, start_with_headers)
            except FlagRequired as refused:
                if refused.redirect_to is not None:
                    start_with_headers("302 Found", [("Location", refused.redirect_to)])
                    return [b""]
                phrase = _phrase(refused.status)
                start_with_headers(f"{refused.status} {phrase}", [("Content-Type", "text/plain")])
                return [phrase.encode()]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
