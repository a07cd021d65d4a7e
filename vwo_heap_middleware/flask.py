"""Flask extension: ``g.flags`` in views and ``flags`` in templates.

::

    heap_flags = HeapFlags(app)                   # Config from app.config (VWO_*/HEAP_* keys)
    heap_flags = HeapFlags(app, engine=engine)    # or share an engine you built
"""

from __future__ import annotations

import atexit
import contextlib
from typing import Any

from flask import Flask, Response, abort, g, redirect, request
from werkzeug.local import LocalProxy

from .config import Config
from .context import build_visitor, resolve_identity
from .engine import FlagEngine
from .request_flags import RequestFlags, current_flags
from .wsgi import facts_from_environ

EXTENSION = "vwo_heap"


def refuse(status: int, redirect_to: str | None) -> Any:
    """Flask's "no page": a redirect response, or ``abort(status)``."""
    if redirect_to is not None:
        return redirect(redirect_to, code=302)
    abort(status)


def _current() -> RequestFlags:
    return g.flags  # type: ignore[no-any-return]


class HeapFlags:
    """Evaluates ``Config.flags`` before each request into ``g.flags``."""

    def __init__(self, app: Flask | None = None, *, engine: FlagEngine | None = None) -> None:
        self.engine = engine
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if self.engine is None:
            # Settings: the engine given, else app.config (same keys as the environment).
            self.engine = FlagEngine(Config.from_env(app.config))
        engine = self.engine
        app.extensions[EXTENSION] = self
        app.jinja_env.globals["flags"] = LocalProxy(_current)
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        app.teardown_request(self._teardown_request)
        engine.start()
        atexit.register(engine.close)

    def _before_request(self) -> None:
        assert self.engine is not None
        config = self.engine.config
        real_request = request._get_current_object()  # type: ignore[attr-defined]
        facts = facts_from_environ(request.environ, config.identity_header)
        visitor = build_visitor(config, facts, real_request, resolve_identity(config, real_request))
        flags = RequestFlags(self.engine, visitor, request=real_request, refuse=refuse)
        flags.load(config.flags)
        g.flags = flags
        g._vwo_heap_token = current_flags.set(flags)

    def _after_request(self, response: Response) -> Response:
        flags: RequestFlags | None = g.get("flags")
        if flags is not None:
            for name, value in flags.response_headers():
                if name == "Vary":
                    response.vary.add(value)
                else:
                    response.headers.add(name, value)
        return response

    def _teardown_request(self, exc: BaseException | None) -> None:
        token = g.pop("_vwo_heap_token", None)
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another context: nothing to undo here
                current_flags.reset(token)
