"""A Django project written from vwo-heap-middleware's README: settings, middleware, a guarded
view, a template with the tag, a DRF view; its tests run offline from flags.toml."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = "user-project"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "vwo_heap_middleware.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "vwo_heap_middleware.django.HeapFlagsMiddleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "OPTIONS": {"context_processors": ["vwo_heap_middleware.django.context_processors.flags"]},
    }
]
VWO_HEAP = {
    "flags": ("premium_checkout",),
    "offline_flags": HERE.parent / "flags.toml",  # tests: no gateway, no network
    "offline_segments": HERE.parent / "segments.json",
}
