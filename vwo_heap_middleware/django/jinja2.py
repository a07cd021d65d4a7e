"""Django's Jinja2 backend with ``flags`` in every template::

    TEMPLATES = [{"BACKEND": "django.template.backends.jinja2.Jinja2",
                  "OPTIONS": {"environment": "vwo_heap_middleware.django.jinja2.environment"}}]

``{% if flags.enabled('premium_checkout') %}``, ``{{ flags.variable('key', 'name', 'x') }}``:
the same ``RequestFlags`` as in views. Output is escaped by autoescape, as any value.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

from ..request_flags import RequestFlags, get_flags


class CurrentFlags:
    """The current request's flags, read when a template asks (outside a request: all off)."""

    def __getattr__(self, name: str) -> Any:
        flags = get_flags()
        if flags is None:
            return _NO_FLAGS[name]
        return getattr(flags, name)


_NO_FLAGS: dict[str, Any] = {
    "enabled": lambda key: False,
    "variable": lambda key, name, default=None: default,
    "identity": None,
    "user_id": None,
    "client_script": lambda *args, **kwargs: "",
}


def environment(**options: Any) -> Environment:
    env = Environment(**options)
    env.globals["flags"] = CurrentFlags()
    return env


__all__ = ["CurrentFlags", "RequestFlags", "environment"]
