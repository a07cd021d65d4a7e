"""The example apps as the chaos suite runs them: INFO logs on stderr, with the process id."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(process)d %(levelname)s %(message)s"
)


def fastapi_app() -> Any:
    """The FastAPI shop, with the engine's counters at /_stats (the burst: lookups in flight)."""
    from fastapi.responses import JSONResponse

    from examples.fastapi_app.app import app, engine

    @app.get("/_stats")
    async def stats() -> JSONResponse:
        return JSONResponse(engine.stats())

    return app


def flask_app() -> Any:
    from examples.flask_app.app import app

    return app


def django_asgi() -> Any:
    from examples.django_app.asgi import application

    return application


def django_wsgi() -> Any:
    from examples.django_app.wsgi import application

    return application


APPS = {"flask": flask_app, "django-asgi": django_asgi, "django-wsgi": django_wsgi}
app = APPS.get(os.environ.get("CHAOS_APP", ""), fastapi_app)()

__all__ = ["app"]
