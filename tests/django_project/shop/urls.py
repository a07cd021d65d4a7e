from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from vwo_heap_middleware.django import requires_flag
from vwo_heap_middleware.django.guards import requires_flag_permission


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@requires_flag("premium_checkout")
def premium(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"premium for {request.flags.identity}")


@api_view(["GET"])
@permission_classes([requires_flag_permission("premium_checkout")])
def offer(request: Request) -> Response:
    return Response({"tier": request.flags.variable("premium_checkout", "tier_label", "-")})


urlpatterns = [path("", home), path("premium", premium), path("api/offer", offer)]
