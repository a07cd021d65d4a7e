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


app = flask_app() if os.environ.get("CHAOS_APP") == "flask" else fastapi_app()

__all__ = ["app"]
