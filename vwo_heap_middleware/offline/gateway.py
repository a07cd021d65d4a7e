"""The offline engine's gateway: settings and Heap segments from local files, no network.

``OfflineGateway`` answers what ``GatewayClient`` answers (settings, memberships, user details)
from a flags TOML or a raw VWO settings JSON and a segments file (list id -> identities), so an
offline engine decides through the same path as production. For development and test suites.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import Config
from .flags_file import compile_flags, load_flags_file, load_settings_file, validate_settings
from .segments_file import Segments, build_segments, load_segments_file

OFFLINE_GATEWAY_URL = "http://offline.invalid"  # never contacted: nothing leaves the process
GATEWAY_NOT_CONTACTED = "offline: the gateway %s is not contacted; flags come from %s"

logger = logging.getLogger("vwo_heap_middleware")

FlagsSource = str | os.PathLike[str] | Mapping[str, Any]
"""A flags TOML or settings JSON path, or the parsed document (flags file or VWO settings)."""
SegmentsSource = str | os.PathLike[str] | Mapping[str, Iterable[str]]


def load_settings(source: FlagsSource) -> dict[str, Any]:
    """VWO settings from a flags file (``.toml``), a settings file (``.json``) or a document."""
    if isinstance(source, Mapping):
        if "features" in source:
            settings = dict(source)
            validate_settings(settings, source="offline settings")
            return settings
        return compile_flags(source, source="offline flags")
    path = Path(source)
    if path.suffix.lower() == ".json":
        return load_settings_file(path)
    return load_flags_file(path)


def load_segments(source: SegmentsSource | None) -> Segments:
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return build_segments(source, source="offline segments")
    return load_segments_file(Path(source))


class OfflineGateway:
    """Answers like ``GatewayClient``, from memory."""

    def __init__(self, flags: FlagsSource, segments: SegmentsSource | None = None) -> None:
        self.settings = load_settings(flags)
        self.segments = load_segments(segments)

    @classmethod
    def open(cls, config: Config) -> tuple[OfflineGateway | None, Config]:
        """For an offline ``config``: its gateway, and the config with the account filled in;
        else ``(None, config)``."""
        if config.offline_flags is None:
            return None, config
        gateway = cls(config.offline_flags, config.offline_segments)
        return gateway, gateway.account_filled_in(config)

    def account_filled_in(self, config: Config) -> Config:
        """``config`` with the settings' account and SDK key where it names none. A gateway it
        names is kept (the SDK's events name it) but never contacted: that is said once."""
        if config.gateway_url:
            logger.info(GATEWAY_NOT_CONTACTED, config.gateway_url, _described(config.offline_flags))
        return dataclasses.replace(
            config,
            account_id=config.account_id or str(self.settings.get("accountId", 0)),
            sdk_key=config.sdk_key or str(self.settings.get("sdkKey") or "offline"),
            gateway_url=config.gateway_url or OFFLINE_GATEWAY_URL,
        )

    def fetch_settings(self, timeout: float = 0.0) -> dict[str, Any]:
        return self.settings

    def is_member(self, list_id: str, attribute: str) -> bool:
        return attribute in self.segments.get(list_id, ())

    def user_details(self, user_agent: str | None, ip_address: str | None) -> dict[str, Any]:
        return {}

    def alias_of(self, user_id: str) -> str:
        """No aliases offline (``Config`` refuses aliasing with offline files)."""
        return user_id

    def set_alias(self, user_id: str, alias_id: str, timeout: float = 0.0) -> None:
        raise RuntimeError("offline: no gateway to keep aliases")

    def close(self) -> None:
        """Nothing to close."""


def _described(source: object) -> str:
    return "a settings document" if isinstance(source, Mapping) else str(source)
