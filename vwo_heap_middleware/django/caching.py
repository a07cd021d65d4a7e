"""``@vary_on_flags``: for views cached with ``@cache_page``, which learns its cache key from the
response before the middleware adds ``Vary``.

::

    @cache_page(60)
    @vary_on_flags
    def home(request): ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ..request_flags import get_flags
from .middleware import add_headers

V = TypeVar("V", bound=Callable[..., Any])


def vary_on_flags(view: V) -> V:
    """Give the view's response the headers the middleware would (``Vary`` on the identity's
    headers, ``Cache-Control: private``) once the page is rendered, so a cache decorator on top
    keeps one visitor's page from another. Like Django's ``@vary_on_cookie``; sync or async."""

    def finish(response: HttpResponseBase) -> HttpResponseBase:
        flags = get_flags()
        if flags is None:
            return response
        if getattr(response, "is_rendered", True):
            return add_headers(response, flags)
        response.add_post_render_callback(lambda rendered: add_headers(rendered, flags))
        return response

    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return finish(await view(request, *args, **kwargs))

        return cast(V, async_view)

    @functools.wraps(view)
    def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return finish(view(request, *args, **kwargs))

    return cast(V, sync_view)
