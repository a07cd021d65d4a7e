"""The Django adapter: an app, a middleware, guards, template tags and system checks.

::

    INSTALLED_APPS = [..., "vwo_heap_middleware.django"]
    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",  # before, if a resolver reads
        "vwo_heap_middleware.django.HeapFlagsMiddleware",             # request.user
    ]
    VWO_HEAP = {"flags": ("premium_checkout",)}  # Config's fields; or VWO_* names; or the env

``request.flags`` in views (DRF's ``Request`` too), ``get_flags()`` anywhere in the request,
``{% load vwo_heap %}`` in templates, ``@vary_on_flags`` under ``@cache_page``, and
``vwo_heap_middleware.django.asgi.get_asgi_application`` for ASGI servers. Needs the
``[django]`` extra (Django 5.2 LTS or newer).
"""

from __future__ import annotations

from .caching import vary_on_flags
from .guards import RequiresFlagMixin, requires_flag, requires_flag_permission
from .middleware import HeapFlagsMiddleware
from .settings import engine

__all__ = [
    "HeapFlagsMiddleware",
    "RequiresFlagMixin",
    "engine",
    "requires_flag",
    "requires_flag_permission",
    "vary_on_flags",
]
