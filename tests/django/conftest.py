"""Django configured once for this process (as a project would be), on a local gateway that
lives as long as the test session: the shop's flags, "vip@example.com" the one member."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.core.management import call_command

from tests.support import SHOP
from vwo_heap_middleware.testing.gateway import LocalGateway, compile_flags

HERE = Path(__file__).resolve().parent
GATEWAY = LocalGateway(compile_flags(SHOP), {"vip": ["vip@example.com"]}).start()
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "vwo_heap_middleware.django.HeapFlagsMiddleware",
]
VWO_HEAP = {
    "account_id": "777",
    "sdk_key": "shop-key",
    "gateway_url": GATEWAY.url,
    "flags": ("premium_checkout", "new_banner"),
    "client_flags": ("new_banner",),
}

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="tests-only",
        ROOT_URLCONF="tests.django.urls",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.staticfiles",
            "rest_framework",
            "debug_toolbar",
            "vwo_heap_middleware.django",
        ],
        MIDDLEWARE=MIDDLEWARE,
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [HERE / "templates"],
                "APP_DIRS": True,  # django-debug-toolbar's templates
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "vwo_heap_middleware.django.context_processors.flags",
                    ]
                },
            },
            {
                "BACKEND": "django.template.backends.jinja2.Jinja2",
                "DIRS": [HERE / "templates" / "jinja2"],
                "OPTIONS": {"environment": "vwo_heap_middleware.django.jinja2.environment"},
            },
        ],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
        USE_TZ=True,
        VWO_HEAP=VWO_HEAP,
        STATIC_URL="/static/",
        # The toolbar shows only when a test asks for it (tests/django/test_panel.py).
        DEBUG_TOOLBAR_PANELS=["vwo_heap_middleware.django.panel.HeapFlagsPanel"],
        DEBUG_TOOLBAR_CONFIG={
            "SHOW_TOOLBAR_CALLBACK": "tests.django.urls.show_toolbar",
            "IS_RUNNING_TESTS": False,
        },
    )
    django.setup()
    call_command("migrate", verbosity=0, run_syncdb=True)  # auth's tables, in memory


@pytest.fixture(scope="session", autouse=True)
def gateway() -> Iterator[LocalGateway]:
    yield GATEWAY
    from vwo_heap_middleware.django.settings import PROCESS_ENGINE

    PROCESS_ENGINE.forget()  # its impressions go while the gateway is there
    GATEWAY.stop()
