"""``HeapFlagsMiddleware``: one middleware for Django's sync (WSGI) and async (ASGI) stacks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.http.response import HttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers

from ..guards import FlagRequired
from ..headers import private_cache_control
from ..request_flags import RequestFlags, open_request, open_request_async
from ..visitor import RequestFacts
from .settings import engine

logger = logging.getLogger("vwo_heap_middleware")

BEFORE_AUTHENTICATION = (
    "the identity_resolver found no request.user: put "
    "vwo_heap_middleware.django.HeapFlagsMiddleware after "
    "django.contrib.auth.middleware.AuthenticationMiddleware in MIDDLEWARE (said once)"
)

GetResponse = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]


class HeapFlagsMiddleware:
    """Decides ``Config.flags`` once per request into ``request.flags`` (and ``get_flags()``);
    adds ``Vary``/``Cache-Control`` with Django's own helpers; answers ``FlagRequired`` the
    Django way: the project's 404 (``Http404``) or 403 (``PermissionDenied``) page, a redirect,
    or a response with the status. Under ASGI async views decide without blocking the loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.engine = engine()
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)
        config = self.engine.config
        self._identity_header = config.identity_header
        self._told_order = config.identity_resolver is None

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self.__acall__(request)
        self._check_order(request)
        flags = open_request(self.engine, self._facts(request), request)
        try:
            request.flags = flags
            return add_headers(self.get_response(request), flags)
        finally:
            flags.close()

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self._check_order(request)
        flags = await open_request_async(
            self.engine, self._facts(request), request, run_sync=thread_sensitive
        )
        try:
            request.flags = flags
            return add_headers(await self.get_response(request), flags)
        finally:
            flags.close()

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        """``FlagRequired`` from a view: Django's own answer for its status."""
        if not isinstance(exception, FlagRequired):
            return None
        return refusal(exception.status, exception.redirect_to)

    def _facts(self, request: HttpRequest) -> RequestFacts:
        return RequestFacts.from_wsgi(request.META, self._identity_header)

    def _check_order(self, request: HttpRequest) -> None:
        if not self._told_order:
            self._told_order = True
            if not hasattr(request, "user"):
                logger.error(BEFORE_AUTHENTICATION)


async def thread_sensitive(call: Callable[[], Any]) -> Any:
    """Run the app's plain hooks as Django runs sync code from async code: ``request.user``
    and the session touch the database, which Django refuses on the event loop."""
    return await sync_to_async(call, thread_sensitive=True)()


def add_headers(response: HttpResponseBase, flags: RequestFlags) -> HttpResponseBase:
    """``flags.response_headers()`` written with Django's own helpers (merging ``Vary``)."""
    added = flags.response_headers()
    if not (response.has_header("Vary") or response.has_header("Cache-Control")):
        for name, value in added.appended:  # the usual response: nothing to merge
            response[name] = value
        return response
    if added.vary:
        patch_vary_headers(response, added.vary)
    existing = response.get("Cache-Control")
    if added.cache_control and private_cache_control(existing) is not None:
        patch_cache_control(response, private=True)  # Django's helper: drops "public" too
    for name, value in added.extra:
        response[name] = value
    return response


def refusal(status: int, redirect_to: str | None) -> HttpResponseBase:
    """Django's "no page": a redirect, the project's 404 or 403 handler, or ``status``."""
    if redirect_to is not None:
        return HttpResponseRedirect(redirect_to)
    if status == 404:
        raise Http404("flag required")
    if status == 403:
        raise PermissionDenied("flag required")
    return HttpResponse(status=status)
