"""A local VWO FME Gateway Service for development, demos and tests.

It serves account settings (from a raw settings JSON or a concise flags file), answers Heap
segment membership (``/check-attribute``) and user details, records the events it receives,
and can inject faults. See ``python -m vwo_heap_middleware.testing.gateway --help``.
Needs the ``[gateway]`` extra (werkzeug serves it).
"""

from __future__ import annotations

from pathlib import Path

from ...offline.flags_file import (
    compile_flags,
    load_flags_file,
    load_settings_file,
    validate_settings,
)
from ...offline.segments_file import build_segments, load_segments_file
from .app import ENDPOINTS, Fault, Faults, GatewayApp
from .errors import GatewayDataError
from .server import LocalGateway, load_data

SAMPLES = Path(__file__).resolve().parent / "samples"
"""The demo's flags file and segments, shipped in the package (``--init DIR`` copies them)."""

__all__ = [
    "ENDPOINTS",
    "Fault",
    "Faults",
    "GatewayApp",
    "GatewayDataError",
    "LocalGateway",
    "SAMPLES",
    "build_segments",
    "compile_flags",
    "load_data",
    "load_flags_file",
    "load_segments_file",
    "load_settings_file",
    "validate_settings",
]
