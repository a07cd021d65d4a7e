"""The pages the Django tests visit: views of every kind, guarded and not."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import include, path
from django.views import View
from django.views.decorators.cache import cache_page
from rest_framework import routers, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from vwo_heap_middleware import RequestFlags, get_flags
from vwo_heap_middleware.django import RequiresFlagMixin, requires_flag, vary_on_flags
from vwo_heap_middleware.django.guards import requires_flag_permission


def show_toolbar(request: HttpRequest) -> bool:
    return request.headers.get("X-Toolbar") == "on"


def state(request: HttpRequest) -> JsonResponse:
    flags: RequestFlags = request.flags
    assert get_flags() is flags
    return JsonResponse({"identity": flags.identity, "flags": flags.to_dict()})


async def async_state(request: HttpRequest) -> JsonResponse:
    flags: RequestFlags = request.flags
    assert get_flags() is flags
    await flags.load_async(["new_banner"])
    return JsonResponse({"identity": flags.identity, "flags": flags.to_dict()})


@requires_flag("premium_checkout")
def premium(request: HttpRequest) -> HttpResponse:
    return HttpResponse("premium")


@requires_flag("premium_checkout")
async def premium_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("premium async")


@requires_flag("premium_checkout", status=403)
def forbidden(request: HttpRequest) -> HttpResponse:
    return HttpResponse("premium")


@requires_flag("premium_checkout", status=402)
def payment(request: HttpRequest) -> HttpResponse:
    return HttpResponse("premium")


@requires_flag("premium_checkout", redirect_to="/pricing")
def redirected(request: HttpRequest) -> HttpResponse:
    return HttpResponse("premium")


@requires_flag("premium_checkout", handler=lambda request: HttpResponse("upsell", status=402))
def handled(request: HttpRequest) -> HttpResponse:
    return HttpResponse("premium")


class PremiumView(RequiresFlagMixin, View):
    requires_flag_key = "premium_checkout"

    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("premium class")


class PremiumAsyncView(RequiresFlagMixin, View):
    requires_flag_key = "premium_checkout"
    requires_flag_redirect_to = "/pricing"

    async def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("premium async class")


def page(request: HttpRequest) -> HttpResponse:
    return render(request, "page.html")


def plain_template(request: HttpRequest) -> HttpResponse:
    return render(request, "plain.html")


def html_page(request: HttpRequest) -> HttpResponse:
    """The page as a whole HTML document (a debug toolbar goes before ``</body>``)."""
    body = render_to_string("page.html", request=request)
    return HttpResponse(f"<!doctype html><html><body>{body}</body></html>")


def jinja_page(request: HttpRequest) -> HttpResponse:
    return render(request, "page.jinja", using="jinja2")


@cache_page(60)
@vary_on_flags
def cached(request: HttpRequest) -> HttpResponse:
    return render(request, "page.html")


@cache_page(60, key_prefix="lazy")
@vary_on_flags
def cached_lazily(request: HttpRequest) -> TemplateResponse:
    return TemplateResponse(request, "page.html")


@cache_page(60, key_prefix="payload")
@vary_on_flags
def cached_payload(request: HttpRequest) -> HttpResponse:
    """Only the browser payload: it reads the visitor even when no flag is allowed."""
    return render(request, "payload.html")


def own_cache_control(request: HttpRequest) -> HttpResponse:
    """A view that sets its own caching and reads a flag."""
    response = HttpResponse("on" if request.flags.enabled("premium_checkout") else "off")
    response["Cache-Control"] = request.GET.get("cc", "max-age=60")
    return response


class FlagsSerializer(serializers.Serializer):
    premium = serializers.SerializerMethodField()

    def get_premium(self, obj: Any) -> bool:
        return bool(self.context["request"].flags.enabled("premium_checkout"))


class PremiumApi(APIView):
    permission_classes = [requires_flag_permission("premium_checkout")]

    def get(self, request: Request) -> Response:
        return Response(FlagsSerializer({}, context={"request": request}).data)


class OffersViewSet(viewsets.ViewSet):
    def list(self, request: Request) -> Response:
        return Response({"tier": request.flags.variable("premium_checkout", "tier_label", "-")})

    @requires_flag("premium_checkout")
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"offer": pk})


router = routers.SimpleRouter()
router.register("offers", OffersViewSet, basename="offers")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return HttpResponse("the project's own 404 page", status=404)


def denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return HttpResponse("the project's own 403 page", status=403)


handler404 = not_found
handler403 = denied

urlpatterns = [
    path("state", state),
    path("async-state", async_state),
    path("premium", premium),
    path("premium-async", premium_async),
    path("forbidden", forbidden),
    path("payment", payment),
    path("redirected", redirected),
    path("handled", handled),
    path("class", PremiumView.as_view()),
    path("class-async", PremiumAsyncView.as_view()),
    path("page", page),
    path("html-page", html_page),
    path("plain-template", plain_template),
    path("jinja", jinja_page),
    path("cached", cached),
    path("cached-lazily", cached_lazily),
    path("cached-payload", cached_payload),
    path("own-cache-control", own_cache_control),
    path("api/premium", PremiumApi.as_view()),
    path("api/", include(router.urls)),
    path("__debug__/", include("debug_toolbar.urls")),
]
