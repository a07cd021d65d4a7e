from __future__ import annotations


class GatewayDataError(ValueError):
    """A settings, flags or segments file the local gateway cannot serve; the message says why."""
