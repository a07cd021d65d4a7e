"""Guards the Django way: ``@requires_flag`` on function views and ``ViewSet`` actions (sync and
async), ``FlagRequiredMixin`` on class-based views, ``flag_permission`` for DRF."""

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


class FlagRequiredMixin:
    """For class-based views: ``flag_required = "key"`` (and ``flag_status``,
    ``flag_redirect_to``); the view runs only when the flag is on. Async views decide without
    blocking the loop."""

    flag_required: str = ""
    flag_status: int = 404
    flag_redirect_to: str | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        guard = requires_flag(
            self.flag_required, status=self.flag_status, redirect_to=self.flag_redirect_to
        )
        parent = super().dispatch  # type: ignore[misc]
        if getattr(self, "view_is_async", False):

            async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                answer = parent(request, *args, **kwargs)
                return await answer if inspect.isawaitable(answer) else answer

            return guard(view)(request, *args, **kwargs)
        return guard(parent)(request, *args, **kwargs)


def flag_permission(key: str) -> type[Any]:
    """A DRF permission class allowing a view only when flag ``key`` is on::

    permission_classes = [IsAuthenticated & flag_permission("premium_checkout")]
    """
    from rest_framework.permissions import BasePermission

    class HasFlag(BasePermission):
        message = f"flag {key!r} required"

        def has_permission(self, request: Any, view: Any) -> bool:
            flags = get_flags()
            return flags is not None and flags.enabled(key)

    HasFlag.__name__ = HasFlag.__qualname__ = f"HasFlag_{key}"
    return HasFlag
