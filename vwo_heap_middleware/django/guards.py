"""Guards the Django way, one name family: ``@requires_flag`` on function views and ``ViewSet``
actions (sync and async), ``RequiresFlagMixin`` on class-based views,
``requires_flag_permission`` for DRF. Each hides the flag by default: a 404 that names nothing."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from .. import guards
from ..request_flags import get_flags
from .middleware import refusal

Handler = Callable[[Any], Any]


def requires_flag(
    key: str,
    *,
    status: int = 404,
    redirect_to: str | None = None,
    handler: Handler | None = None,
) -> Callable[[Any], Any]:
    """Serve the view only when flag ``key`` is on: otherwise the project's 404 page (Django's
    ``Http404``; DRF answers it as its JSON 404), ``status`` (403: the project's 403 page), a
    redirect to the relative path ``redirect_to``, or ``handler(request)``'s response."""
    redirect_to = guards.refusal(status, redirect_to)

    def refuse(request: Any) -> Any:
        return refusal(status, redirect_to)

    return guards.requires_flag(key, handler=handler or refuse)


class RequiresFlagMixin:
    """For class-based views: ``requires_flag_key = "key"`` (and ``requires_flag_status``,
    ``requires_flag_redirect_to``); the view runs only when the flag is on. Async views decide
    without blocking the loop."""

    requires_flag_key: str = ""
    requires_flag_status: int = 404
    requires_flag_redirect_to: str | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        guard = requires_flag(
            self.requires_flag_key,
            status=self.requires_flag_status,
            redirect_to=self.requires_flag_redirect_to,
        )
        parent = super().dispatch  # type: ignore[misc]
        if getattr(self, "view_is_async", False):

            async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                answer = parent(request, *args, **kwargs)
                return await answer if inspect.isawaitable(answer) else answer

            return guard(view)(request, *args, **kwargs)
        return guard(parent)(request, *args, **kwargs)


def requires_flag_permission(key: str, *, status: int = 404) -> type[Any]:
    """A DRF permission class allowing a view only when flag ``key`` is on::

        permission_classes = [IsAuthenticated & requires_flag_permission("premium_checkout")]

    When it is off: DRF's 404 (``NotFound``), as ``@requires_flag`` answers, so the flag stays
    hidden (for an anonymous visitor too: no "credentials were not provided"); ``status=403``:
    DRF's usual refusal, whose message does not name the flag either."""
    from rest_framework.exceptions import NotFound
    from rest_framework.permissions import BasePermission

    class RequiresFlag(BasePermission):
        def has_permission(self, request: Any, view: Any) -> bool:
            flags = get_flags()
            if flags is not None and flags.enabled(key):
                return True
            if status == 404:
                raise NotFound()
            return False

    RequiresFlag.__name__ = RequiresFlag.__qualname__ = f"RequiresFlag_{key}"
    return RequiresFlag
