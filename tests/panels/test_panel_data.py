"""What every framework's debug panel shows, on its own (``panels``)."""

from __future__ import annotations

import pytest

from vwo_heap_middleware.config import Config
from vwo_heap_middleware.panels import tried_sources


@pytest.mark.parametrize(
    ("trust", "tried"),
    [
        (True, ["resolver", "header", "cookie"]),
        (False, ["resolver", "cookie (anonymous user id only)"]),
    ],
)
def test_sources_tried_are_what_can_name_the_visitor(trust: bool, tried: list[str]) -> None:
    """Issue: with trust off the panel listed the header and cookie as identity sources."""
    config = Config(
        offline_flags="vwo_heap_middleware/testing/gateway/samples/flags.toml",
        trust_client_identity=trust,
    )
    assert tried_sources(config) == tried
