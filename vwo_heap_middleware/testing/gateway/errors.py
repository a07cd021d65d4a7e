from __future__ import annotations

from ...offline.flags_file import DataFileError

GatewayDataError = DataFileError
"""A settings, flags or segments file the local gateway cannot serve; the message says why."""
