"""Splitting Cookie headers pair by pair, as browsers send them."""

from __future__ import annotations

import pytest

from tests.conftest import v5
from vwo_heap_middleware import cookies
from vwo_heap_middleware.cookies import MAX_COOKIE_HEADER, iter_cookies
from vwo_heap_middleware.identity import identity_from_cookies


@pytest.mark.parametrize(
    ("header", "pairs"),
    [
        ("a=1; b=2", [("a", "1"), ("b", "2")]),
        (
            'tracking={"a":1}; pref=dark mode; q=a"b',
            [("tracking", '{"a":1}'), ("pref", "dark mode"), ("q", 'a"b')],
        ),
        ("novalue; =orphan; c=3", [("c", "3")]),
        ("  spaced  =  v  ;;d=", [("spaced", "v"), ("d", "")]),
        ("x=a=b", [("x", "a=b")]),
        ("a=1,b=2", [("a", "1"), ("b", "2")]),  # two Cookie headers, joined by a WSGI server
        ('j={"x":1,"y":2}; c=3', [("j", '{"x":1,"y":2}'), ("c", "3")]),
        ("", []),
    ],
)
def test_pairs(header: str, pairs: list[tuple[str, str]]) -> None:
    assert list(iter_cookies(header)) == pairs


def test_huge_headers_are_cut_not_refused() -> None:
    header = "a=1; " + "b" * MAX_COOKIE_HEADER + "=2; c=3"
    assert list(iter_cookies(header)) == [("a", "1")]


def test_a_cut_cookie_header_is_said_once_at_debug(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cookies, "_said", [])
    header = "pad=" + "x" * MAX_COOKIE_HEADER + "; " + v5("late@example.com")
    with caplog.at_level("DEBUG", logger="vwo_heap_middleware"):
        for _ in range(3):
            assert identity_from_cookies(header).identity is None, "past 64 KiB: not read"
    said = [r for r in caplog.records if r.msg == cookies.COOKIE_CUT]
    assert len(said) == 1 and said[0].levelname == "DEBUG"
