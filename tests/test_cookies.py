"""Splitting Cookie headers pair by pair, as browsers send them."""

from __future__ import annotations

import pytest

from vwo_heap_middleware.cookies import MAX_COOKIE_HEADER, iter_cookies


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
