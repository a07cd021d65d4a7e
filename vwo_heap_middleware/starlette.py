"""Starlette templates: ``flags`` in every ``Jinja2Templates`` response.

::

    templates = Jinja2Templates(directory="templates", context_processors=[flags_context])
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .request_flags import RequestFlags


def flags_context(request: Request) -> dict[str, Any]:
    """A Jinja2Templates context processor: ``{{ flags.variable('key', 'name', 'default') }}``."""
    flags: RequestFlags | None = getattr(request.state, "flags", None)
    return {"flags": flags}
