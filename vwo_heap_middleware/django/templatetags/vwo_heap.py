"""``{% load vwo_heap %}``: flags in Django templates, decided as in the view.

::

    {% flag "premium_checkout" %}<a href="/premium">Premium</a>{% else %}Standard{% endflag %}
    {% flag_variable "new_banner" "text" "Welcome" %}
    {% flag_variable "new_banner" "text" "Welcome" as text %}{{ text|upper }}
    {% client_flags nonce=request.csp_nonce %}  {# for the browser: Config.client_flags #}

Variables are escaped like any template value.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.template.base import FilterExpression, Parser, Token

from ...browser import ELEMENT_ID
from ...request_flags import RequestFlags, get_flags

register = template.Library()


def _flags(context: template.Context) -> RequestFlags | None:
    flags = getattr(context.get("request"), "flags", None)  # not ``or``: no decisions is falsy
    return flags if flags is not None else get_flags()


class FlagNode(template.Node):
    def __init__(
        self, key: FilterExpression, on: template.NodeList, off: template.NodeList
    ) -> None:
        self.key, self.on, self.off = key, on, off

    def render(self, context: template.Context) -> str:
        flags = _flags(context)
        key = self.key.resolve(context)
        enabled = flags is not None and isinstance(key, str) and flags.enabled(key)
        return (self.on if enabled else self.off).render(context)


@register.tag("flag")
def flag(parser: Parser, token: Token) -> FlagNode:
    """``{% flag "key" %}...{% else %}...{% endflag %}``: the first part when the flag is on."""
    bits = token.split_contents()
    if len(bits) != 2:
        raise template.TemplateSyntaxError(f"{bits[0]} takes one argument: the flag's key")
    on = parser.parse(("else", "endflag"))
    off = template.NodeList()
    if parser.next_token().contents == "else":
        off = parser.parse(("endflag",))
        parser.delete_first_token()
    return FlagNode(parser.compile_filter(bits[1]), on, off)


@register.simple_tag(takes_context=True)
def flag_variable(context: template.Context, key: str, name: str, default: Any = None) -> Any:
    """A flag's variable, ``default`` when the flag is off or lacks it (escaped on output)."""
    flags = _flags(context)
    return default if flags is None else flags.variable(key, name, default)


@register.simple_tag(takes_context=True)
def flag_enabled(context: template.Context, key: str) -> bool:
    """``{% flag_enabled "key" as on %}``: whether a flag is on, to use in ``{% if %}``."""
    flags = _flags(context)
    return flags is not None and flags.enabled(key)


@register.simple_tag(takes_context=True)
def client_flags(
    context: template.Context,
    element_id: str = ELEMENT_ID,
    nonce: str | None = None,
    vwo_storage: bool = False,
) -> str:
    """``{% client_flags nonce=request.csp_nonce %}``: the flags ``Config.client_flags`` allows,
    as a ``<script type="application/json">`` element the browser module reads (``<``, ``>``,
    ``&``, U+2028, U+2029 escaped, as Django's ``json_script`` does); nothing outside a request."""
    flags = _flags(context)
    return "" if flags is None else flags.client_script(element_id, nonce, vwo_storage)
