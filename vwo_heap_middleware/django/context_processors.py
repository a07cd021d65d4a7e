"""``"vwo_heap_middleware.django.context_processors.flags"``: ``flags`` in every template."""

from __future__ import annotations

from django.http import HttpRequest

from ..request_flags import RequestFlags, get_flags


def flags(request: HttpRequest) -> dict[str, RequestFlags | None]:
    found = getattr(request, "flags", None)
    return {"flags": found if found is not None else get_flags()}
