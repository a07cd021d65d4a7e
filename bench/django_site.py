"""The benchmark page on Django under uvicorn (``django``: ASGI, async views) or gunicorn
(``django-wsgi``: WSGI, the same views plain), for the cases ``bare`` (no middleware) and
``middleware`` (``HeapFlagsMiddleware``); the gateway comes from the environment, as for the
other frameworks (``bench/apps.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from .apps import CASE, PAUSES, ready_now, render

MIDDLEWARE = CASE == "middleware"
FRAMEWORK = os.environ.get("BENCH_FRAMEWORK")
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="bench-only",
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["vwo_heap_middleware.django"] if MIDDLEWARE else [],
    # CommonMiddleware as most projects have it (it also sets Content-Length).
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        *(["vwo_heap_middleware.django.HeapFlagsMiddleware"] if MIDDLEWARE else []),
    ],
    DATABASES={},
    USE_TZ=True,
    LOGGING_CONFIG=None,
)
django.setup()


View = Callable[[HttpRequest], HttpResponse]


def served(view: View) -> Any:
    """``view`` as the server runs it: plain under WSGI, a coroutine under ASGI (no thread)."""
    if FRAMEWORK == "django-wsgi":
        return view

    async def async_view(request: HttpRequest) -> HttpResponse:
        return view(request)

    return async_view


@served
def page(request: HttpRequest) -> HttpResponse:
    if not MIDDLEWARE:
        return HttpResponse(render((False, {}), False))
    flags = request.flags
    banner = flags["new_banner"]
    return HttpResponse(
        render((banner.enabled, dict(banner.variables)), flags.enabled("premium_checkout"))
    )


def engine() -> Any:
    from vwo_heap_middleware.django import engine

    return engine() if MIDDLEWARE else None


@served
def healthz(request: HttpRequest) -> HttpResponse:
    ready = ready_now(not MIDDLEWARE or engine().ready)
    return HttpResponse("ok" if ready else "loading", status=200 if ready else 503)


@served
def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(engine().stats() if MIDDLEWARE else {})


@served
def gc_pauses(request: HttpRequest) -> JsonResponse:
    return JsonResponse(PAUSES.reset())


urlpatterns = [
    path("", page),
    path("healthz", healthz),
    path("stats", stats),
    path("gc", gc_pauses),
]


def asgi_application() -> Any:
    if MIDDLEWARE:
        from vwo_heap_middleware.django.asgi import get_asgi_application

        return get_asgi_application()
    from django.core.asgi import get_asgi_application as bare

    return bare()


def wsgi_application() -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


application = (
    asgi_application()
    if FRAMEWORK == "django"
    else wsgi_application()
    if FRAMEWORK == "django-wsgi"
    else None
)
