"""Roll out features to Heap segments through VWO Feature Management, in Flask and Starlette.

Importing this package imports no web framework: the adapters live in ``.asgi``, ``.wsgi``,
``.flask`` and ``.starlette``.
"""

from __future__ import annotations

from .config import Config, FlagDefault
from .context import RequestFacts, Visitor, build_visitor
from .decision import FlagDecision, Reason
from .engine import FlagEngine
from .guards import requires_flag
from .identity import HeapIdentity
from .request_flags import RequestFlags, get_flags

__all__ = [
    "Config",
    "FlagDecision",
    "FlagDefault",
    "FlagEngine",
    "HeapIdentity",
    "Reason",
    "RequestFacts",
    "RequestFlags",
    "Visitor",
    "build_visitor",
    "get_flags",
    "requires_flag",
]
