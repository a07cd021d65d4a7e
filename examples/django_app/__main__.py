"""``python -m examples.django_app``: the Django shop on uvicorn (ASGI)."""

from __future__ import annotations

import os

import uvicorn

from examples.demo_setup import print_curl_lines

port = int(os.environ.get("PORT", "8000"))
print_curl_lines(port)
uvicorn.run("examples.django_app.asgi:application", host="127.0.0.1", port=port)
