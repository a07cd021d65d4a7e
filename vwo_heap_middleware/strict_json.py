"""JSON for what leaves the process for other parsers (the browser payload, the command line):
strict JSON only. VWO settings may hold a number JSON cannot carry (``1e400`` parses as
infinity); ``json.dumps`` would write ``Infinity``/``NaN``, which ``JSON.parse`` refuses, so a
non-finite number becomes ``null`` (said once in the log)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

logger = logging.getLogger("vwo_heap_middleware")

NOT_FINITE = "a non-finite number (infinity or NaN) cannot be JSON: written as null"
_said: list[bool] = []


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps(value, **options)`` as strict JSON (non-finite numbers as ``null``)."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        if not _said:
            _said.append(True)
            logger.warning(NOT_FINITE)
        return json.dumps(_finite(value), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
