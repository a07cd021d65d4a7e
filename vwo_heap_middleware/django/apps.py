"""The Django app: builds and starts the process's engine at start-up, and registers the
system checks (``manage.py check``) that report a bad configuration before any request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .settings import PROCESS_ENGINE, config_from_settings

logger = logging.getLogger("vwo_heap_middleware")

MIDDLEWARE_PATH = "vwo_heap_middleware.django.HeapFlagsMiddleware"
AUTHENTICATION = "django.contrib.auth.middleware.AuthenticationMiddleware"


class VwoHeapConfig(AppConfig):
    name = "vwo_heap_middleware.django"
    label = "vwo_heap"
    verbose_name = "Heap segments through VWO feature flags"
    # The package's root: its static/ holds vwo_heap/flags.js ({% static "vwo_heap/flags.js" %}).
    path = str(Path(__file__).resolve().parent.parent)

    def ready(self) -> None:
        checks.register(check_configuration, "vwo_heap")
        try:
            PROCESS_ENGINE.get()  # start loading settings now; a mistake waits for the check
        except ImproperlyConfigured:
            logger.debug("vwo_heap_middleware is not configured yet", exc_info=True)


def check_configuration(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Any]:
    """``vwo_heap.E001``: the settings do not make a valid configuration (the message names
    the setting); ``vwo_heap.E002``: the middleware is missing; ``vwo_heap.W001``: an identity
    resolver is configured but the middleware runs before authentication; ``vwo_heap.W002``: a
    resolver is configured and there is no authentication middleware at all."""
    problems: list[Any] = []
    try:
        config = config_from_settings()
    except (TypeError, ValueError) as error:
        return [
            checks.Error(
                str(error),
                hint="Fix it in settings.VWO_HEAP, the VWO_* settings or the environment.",
                id="vwo_heap.E001",
            )
        ]
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        problems.append(
            checks.Error(
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: no request has flags",
                hint="Add it to MIDDLEWARE, after AuthenticationMiddleware.",
                id="vwo_heap.E002",
            )
        )
    elif config.identity_resolver is not None and AUTHENTICATION not in middleware:
        problems.append(
            checks.Warning(
                "an identity resolver is configured but AuthenticationMiddleware is not in "
                "MIDDLEWARE: a resolver reading request.user finds none",
                hint=f"Add {AUTHENTICATION} before {MIDDLEWARE_PATH} (or ignore this if your "
                "resolver reads something else).",
                id="vwo_heap.W002",
            )
        )
    elif config.identity_resolver is not None and middleware.index(
        AUTHENTICATION
    ) > middleware.index(MIDDLEWARE_PATH):
        problems.append(
            checks.Warning(
                "HeapFlagsMiddleware runs before AuthenticationMiddleware: an identity "
                "resolver reading request.user finds none",
                hint=f"Move {MIDDLEWARE_PATH} after {AUTHENTICATION} in MIDDLEWARE.",
                id="vwo_heap.W001",
            )
        )
    return problems
