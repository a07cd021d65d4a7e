"""The Heap Shop's pages: ``/``, ``/premium`` (guarded), ``/api/flags`` and ``/healthz``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path

from examples.demo_setup import flags_payload
from vwo_heap_middleware.django import engine, requires_flag


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html")


@requires_flag("premium_checkout")  # the project's 404 page unless the flag is on
def premium(request: HttpRequest) -> HttpResponse:
    return render(request, "premium.html")


async def api_flags(request: HttpRequest) -> JsonResponse:
    return JsonResponse(flags_payload(request.flags, engine().config.flags))


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse(engine().readiness(), status=200 if engine().ready else 503)


urlpatterns = [
    path("", index),
    path("premium", premium),
    path("api/flags", api_flags),
    path("healthz", healthz),
]
