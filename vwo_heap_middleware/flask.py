"""Flask extension: ``g.flags`` in views and ``flags`` in templates.

::

    heap_flags = HeapFlags(app)                   # Config from app.config, then the environment
    heap_flags = HeapFlags(app, identity_resolver=heap_identity)  # your login's identity
    heap_flags = HeapFlags(app, engine=engine)    # or share an engine you built

``app.config`` takes the environment's names (``VWO_HEAP_FLAGS``, ...; ``None`` means unset),
the hooks too (``VWO_HEAP_IDENTITY_RESOLVER``: a callable or a dotted path).

The browser module is served at ``/vwo-heap/vwo_heap/flags.js``
(``url_for("vwo_heap.static", filename="vwo_heap/flags.js")``; ``static_url_path=None``: not).
"""

from __future__ import annotations

import os
from collections import ChainMap
from typing import Any

from flask import Blueprint, Flask, current_app, g, redirect, request
from werkzeug.exceptions import HTTPException, default_exceptions
from werkzeug.local import LocalProxy

from .browser import STATIC_DIR
from .config import Config, import_hook
from .engine import FlagEngine
from .guards import FlagRequired
from .guards import requires_flag as requires_flag  # the guard, from each adapter
from .request_flags import RequestFlags, open_request
from .visitor import RequestFacts
from .wsgi import ENVIRON_KEY, with_flag_headers

EXTENSION = "vwo_heap"


def _current() -> RequestFlags:
    return g.flags  # type: ignore[no-any-return]


class HeapFlags:
    """Decides ``Config.flags`` before each request into ``g.flags``."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        engine: FlagEngine | None = None,
        static_url_path: str | None = "/vwo-heap",
        identity_resolver: Any = None,  # request -> identity | None (your login), or a path
        fallback_user_id: Any = None,  # request -> user id | None, for visitors with none
        context_enricher: Any = None,  # request -> {name: value}: more custom variables
    ) -> None:
        hooks = {
            "identity_resolver": identity_resolver,
            "fallback_user_id": fallback_user_id,
            "context_enricher": context_enricher,
        }
        self.hooks = {name: hook for name, hook in hooks.items() if hook is not None}
        if engine is not None and self.hooks:
            raise TypeError("give the hooks to the engine's Config, or give no engine")
        self.engine = engine
        self.static_url_path = static_url_path
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if self.engine is None:
            # The same keys as the environment: app.config first, then os.environ.
            hooks = {name: import_hook(hook) for name, hook in self.hooks.items()}
            config = Config.from_env(ChainMap(app.config, os.environ), **hooks)
            self.engine = FlagEngine(config)
        app.extensions[EXTENSION] = self
        app.jinja_env.globals["flags"] = LocalProxy(_current)
        app.before_request(self._before_request)
        # The response's headers and the request's end, outside Flask's objects: one hook, no
        # Response header parsing, on every request.
        app.wsgi_app = _Finishing(app.wsgi_app)  # type: ignore[method-assign]
        app.register_error_handler(FlagRequired, _refusal)
        if self.static_url_path is not None:
            static = Blueprint(
                EXTENSION, __name__, static_folder=STATIC_DIR, static_url_path=self.static_url_path
            )
            app.register_blueprint(static)
        self.engine.start()

    def _before_request(self) -> None:
        assert self.engine is not None
        current = request._get_current_object()  # type: ignore[attr-defined]
        environ = current.environ
        facts = RequestFacts.from_wsgi(environ, self.engine.config.identity_header)
        g.flags = environ[ENVIRON_KEY] = open_request(self.engine, facts, current)


class _Finishing:
    """Around Flask's WSGI app: the flags' response headers (``Vary``, ``Cache-Control``) added
    as the response starts, and the request's flags closed when Flask is done with it."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            flags: RequestFlags | None = environ.get(ENVIRON_KEY)
            if flags is not None:
                headers = with_flag_headers(flags.response_headers(), headers)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            flags: RequestFlags | None = environ.get(ENVIRON_KEY)
            if flags is not None:
                flags.close()


def _refusal(refused: FlagRequired) -> Any:
    """Flask's "no page": a redirect, or the app's own handler for the status (``abort``)."""
    if refused.redirect_to is not None:
        return redirect(refused.redirect_to, code=302)
    kind = default_exceptions.get(refused.status)
    error = kind() if kind is not None else HTTPException()
    error.code = refused.status
    return current_app.handle_http_exception(error)
