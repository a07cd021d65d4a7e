"""The Heap Shop on Django: the same shop, data and environment variables as the others.

``VWO_GATEWAY_URL`` (with ``VWO_ACCOUNT_ID``, ``VWO_SDK_KEY``) points at a gateway; without
it a local gateway serves the demo data (``examples.demo_setup.load_config``).
"""

from __future__ import annotations

from pathlib import Path

from examples.demo_setup import load_config

_config = load_config()  # the environment, or the demo gateway when none is named

SECRET_KEY = "heap-shop-demo-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS = ["vwo_heap_middleware.django"]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "vwo_heap_middleware.django.HeapFlagsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {
            "loaders": ["django.template.loaders.filesystem.Loader"],
            "context_processors": ["vwo_heap_middleware.django.context_processors.flags"],
        },
    }
]

DATABASES: dict[str, object] = {}
USE_TZ = True
# The engine's configuration: the environment as load_config() read it.
VWO_HEAP = {
    "account_id": _config.account_id,
    "sdk_key": _config.sdk_key,
    "gateway_url": _config.gateway_url,
    "flags": _config.flags,
    "client_flags": _config.client_flags,
}
LOGGING_CONFIG = None
