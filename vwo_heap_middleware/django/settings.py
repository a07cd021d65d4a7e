"""The process's one engine, configured from Django settings, then the environment."""

from __future__ import annotations

import os
import threading
from collections import ChainMap
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..config import ENVIRONMENT, Config
from ..engine import FlagEngine


def config_from_settings() -> Config:
    """``VWO_HEAP = {...}`` (``Config``'s field names) wins; then settings named like the
    environment variables (``VWO_ACCOUNT_ID``, ``VWO_HEAP_FLAGS``, ...); then the environment.
    A mistake raises ``ValueError``/``TypeError`` naming the setting to fix."""
    named = {name: getattr(settings, name) for name in ENVIRONMENT if hasattr(settings, name)}
    fields: dict[str, Any] = dict(getattr(settings, "VWO_HEAP", None) or {})
    unknown = set(fields) - set(Config.__dataclass_fields__) - {"proxy_networks"}
    if unknown:
        raise TypeError(f"VWO_HEAP has keys Config does not know: {', '.join(sorted(unknown))}")
    return Config.from_env(ChainMap(named, os.environ), **fields)


class ProcessEngine:
    """The process's one engine: built from settings on first use (the app's ``ready()``
    does it at start-up) and started; closed at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: FlagEngine | None = None

    def get(self) -> FlagEngine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    try:
                        built = FlagEngine(config_from_settings())
                    except (TypeError, ValueError) as error:
                        raise ImproperlyConfigured(f"vwo_heap_middleware: {error}") from error
                    built.start()
                    self._engine = built
        return self._engine

    def forget(self) -> FlagEngine | None:
        """Close and forget the engine (tests that change settings); returns it."""
        with self._lock:
            old, self._engine = self._engine, None
        if old is not None:
            old.close()
        return old


PROCESS_ENGINE = ProcessEngine()


def engine() -> FlagEngine:
    """The process's engine (``readiness()`` for health checks). After ``gunicorn --preload``
    forks, each worker re-initialises it on first use, or call ``engine().postfork()`` in a
    ``post_fork`` hook."""
    return PROCESS_ENGINE.get()
