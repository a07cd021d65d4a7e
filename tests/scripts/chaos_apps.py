"""The example apps as the chaos suite runs them: INFO logs on stderr, with the process id."""

from __future__ import annotations

import logging
import os
import sys

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(process)d %(levelname)s %(message)s"
)

if os.environ.get("CHAOS_APP") == "flask":
    from examples.flask_app.app import app
else:
    from fastapi.responses import JSONResponse

    from examples.fastapi_app.app import app, engine  # type: ignore[assignment]

    @app.get("/_stats")  # type: ignore[attr-defined]
    async def stats() -> JSONResponse:
        """The engine's counters, for the burst: lookups still in flight."""
        return JSONResponse(engine.stats())


__all__ = ["app"]
