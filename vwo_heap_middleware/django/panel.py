"""A django-debug-toolbar panel: add ``"vwo_heap_middleware.django.panel.HeapFlagsPanel"`` to
``DEBUG_TOOLBAR_PANELS``. It records what ``request.flags`` decided (the identity hashed) when
the toolbar runs, which is only when it is installed and its ``SHOW_TOOLBAR_CALLBACK`` says so
(by default ``DEBUG`` and an ``INTERNAL_IPS`` client)."""

from __future__ import annotations

from typing import Any

from debug_toolbar.panels import Panel
from django.utils.safestring import mark_safe

from ..panels import TITLE, render, subtitle, summary


class HeapFlagsPanel(Panel):
    title = TITLE
    nav_title = TITLE

    @property
    def nav_subtitle(self) -> str:
        stats = self.get_stats()
        return subtitle(stats) if stats else ""

    def generate_stats(self, request: Any, response: Any) -> None:
        self.record_stats(summary(getattr(request, "flags", None)))

    @property
    def content(self) -> str:
        return mark_safe(render(self.get_stats()))  # noqa: S308 - render() escapes every value
