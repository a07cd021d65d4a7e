"""Roll out features to Heap segments through VWO Feature Management, in Flask and Starlette."""

from __future__ import annotations

__all__: list[str] = []
