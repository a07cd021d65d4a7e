"""The Heap Shop's pages: ``/``, ``/premium`` (guarded), ``POST /purchase``, ``/api/flags`` and
``/healthz``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_POST
from django.views.static import serve

from examples.demo_setup import flags_payload
from vwo_heap_middleware.browser import STATIC_DIR
from vwo_heap_middleware.django import engine, requires_flag


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html")


@requires_flag("premium_checkout")  # the project's 404 page unless the flag is on
def premium(request: HttpRequest) -> HttpResponse:
    return render(request, "premium.html")


async def api_flags(request: HttpRequest) -> JsonResponse:
    details = request.GET.get("details") == "1"
    return JsonResponse(flags_payload(request.flags, engine().config.flags, details))


@require_POST
def purchase(request: HttpRequest) -> JsonResponse:
    """The experiment's conversion: ``purchase`` is a metric of ``premium_checkout``."""
    return JsonResponse({"conversion": request.flags.track("purchase", {"revenue": 49.0}).status})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse(engine().readiness(), status=200 if engine().ready else 503)


urlpatterns = [
    path("", index),
    # The browser module, as the other shops serve it (a real site: collectstatic, whitenoise).
    path("vwo-heap/<path:path>", serve, {"document_root": STATIC_DIR}),
    path("premium", premium),
    path("purchase", purchase),
    path("api/flags", api_flags),
    path("healthz", healthz),
]
