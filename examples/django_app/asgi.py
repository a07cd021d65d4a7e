"""``uvicorn examples.django_app.asgi:application``: async views decide on the event loop; the
lifespan closes the engine (sending spooled impressions) when the server stops."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

from vwo_heap_middleware.django.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
