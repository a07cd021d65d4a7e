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
    from examples.fastapi_app.app import app  # type: ignore[assignment]

__all__ = ["app"]
