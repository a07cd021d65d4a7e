"""The process's one engine, configured from Django settings, then the environment."""

from __future__ import annotations

import difflib
import os
import threading
from collections import ChainMap
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..config import ENVIRONMENT, Config, import_hook
from ..engine import FlagEngine

HOOKS = ("identity_resolver", "fallback_user_id", "context_enricher")


def config_from_settings() -> Config:
    """``VWO_HEAP = {...}`` (``Config``'s field names) wins; then settings named like the
    environment variables (``VWO_ACCOUNT_ID``, ``VWO_HEAP_FLAGS``, ...); then the environment.
    Hooks may be dotted paths, imported here (once the app registry is ready, as Django does
    for ``AUTHENTICATION_BACKENDS``). A mistake raises ``ValueError``/``TypeError`` naming the
    setting to fix; every unknown key at once, each with a did-you-mean."""
    named = {name: getattr(settings, name) for name in ENVIRONMENT if hasattr(settings, name)}
    fields: dict[str, Any] = dict(getattr(settings, "VWO_HEAP", None) or {})
    known = set(Config.__dataclass_fields__) - {"proxy_networks"}
    unknown = sorted(set(fields) - known)
    if unknown:
        said = [f"{key!r}{_did_you_mean(key, known)}" for key in unknown]
        raise TypeError(f"VWO_HEAP has keys Config does not know: {', '.join(said)}")
    problems = []
    for name in HOOKS:
        try:
            fields[name] = import_hook(fields[name]) if name in fields else None
        except ValueError as error:
            problems.append(f"VWO_HEAP[{name!r}]: {error}")
        if fields[name] is None:
            del fields[name]
    if problems:
        raise ValueError("; ".join(problems))
    return Config.from_env(ChainMap(named, os.environ), **fields)


def _did_you_mean(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
