"""Roll out features to Heap segments through VWO Feature Management, in Flask and Starlette.

Importing this package imports no web framework and starts nothing: the adapters live in
``.starlette`` (Starlette and FastAPI), ``.fastapi``, ``.flask`` and ``.wsgi``.
"""

from __future__ import annotations

from .config import Config, FlagDefault
from .decision import FlagDecision, Reason
from .engine import FlagEngine
from .guards import FlagRequired, requires_flag
from .identity import HeapIdentity
from .request_flags import RequestFlags, get_flags, open_request, open_request_async
from .visitor import RequestFacts, Visitor, build_visitor

__all__ = [
    "Config",
    "FlagDecision",
    "FlagDefault",
    "FlagEngine",
    "FlagRequired",
    "HeapIdentity",
    "Reason",
    "RequestFacts",
    "RequestFlags",
    "Visitor",
    "build_visitor",
    "get_flags",
    "open_request",
    "open_request_async",
    "requires_flag",
]
