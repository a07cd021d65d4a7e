"""A Flask-DebugToolbar panel: add ``"vwo_heap_middleware.panels.flask.HeapFlagsPanel"`` to
``DEBUG_TB_PANELS``. It shows what ``g.flags`` decided; the toolbar runs only when enabled
(``DEBUG_TB_ENABLED``, by default with ``app.debug``)."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_debugtoolbar.panels import DebugPanel

from . import TITLE, render, subtitle, summary


class HeapFlagsPanel(DebugPanel):
    name = "HeapFlags"
    has_content = True

    def nav_title(self) -> str:
        return TITLE

    def nav_subtitle(self) -> str:
        return subtitle(self._summary())

    def title(self) -> str:
        return TITLE

    def url(self) -> str:
        return ""

    def content(self) -> str:
        return render(self._summary())

    def _summary(self) -> dict[str, Any]:
        return summary(g.get("flags"))
