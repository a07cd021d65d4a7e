"""The headers a flagged response carries, on their own."""

from __future__ import annotations

import pytest

from vwo_heap_middleware.headers import (
    ResponseHeaders,
    merge_vary,
    private_cache_control,
    read_headers,
)
from vwo_heap_middleware.starlette import with_headers
from vwo_heap_middleware.wsgi import with_flag_headers


def test_merge_vary() -> None:
    assert merge_vary(None, ["Cookie"]) == "Cookie"
    assert (
        merge_vary("Accept-Encoding, cookie", ["Cookie", "X-Heap-Identity"])
        == "Accept-Encoding, cookie, X-Heap-Identity"
    )


def test_the_usual_response_gets_headers_encoded_once() -> None:
    read = read_headers(("Cookie", "X-Heap-Identity"), False, True)
    assert read is read_headers(("Cookie", "X-Heap-Identity"), False, True), "made once"
    assert read.raw == ((b"vary", b"Cookie, X-Heap-Identity"), (b"cache-control", b"private"))
    plain = [(b"content-type", b"text/html")]
    assert with_headers(plain, read) == [*plain, *read.raw]
    own = [
        (b"content-type", b"text/html"),
        (b"Vary", b"Accept-Encoding"),
        (b"cache-control", b"no-store"),
    ]
    assert with_headers(own, read) == [
        (b"content-type", b"text/html"),
        (b"cache-control", b"no-store"),
        (b"vary", b"Accept-Encoding, Cookie, X-Heap-Identity"),
    ], "a response's own Vary is merged and its Cache-Control kept"
    with_ua = read_headers(("Cookie",), True, False)
    assert with_ua == ResponseHeaders(("Cookie", "User-Agent"), (), None)


@pytest.mark.parametrize(
    ("own", "made"),
    [
        (None, "private"),
        ("max-age=60", "private, max-age=60"),
        ("public, max-age=60", "private, max-age=60"),
        ("Public,s-maxage=10", "private, s-maxage=10"),
        ("no-store", None),
        ("private, max-age=5", None),
        ("no-cache, NO-STORE", None),
    ],
)
def test_a_views_own_cache_control_is_made_private(own: str | None, made: str | None) -> None:
    """Issue: a view's ``max-age=60`` was left as it was: a shared cache could serve one
    visitor's flags to the next."""
    assert private_cache_control(own) == made


@pytest.mark.parametrize("private", [True, False])
def test_each_adapter_makes_the_views_cache_control_private(private: bool) -> None:
    read = read_headers(("Cookie",), False, private)
    own = [(b"content-type", b"text/plain"), (b"cache-control", b"public, max-age=60")]
    asgi = dict(with_headers(own, read))
    wsgi_headers = with_flag_headers(read, [(n.decode(), v.decode()) for n, v in own])
    assert [n.lower() for n, _ in wsgi_headers].count("cache-control") == 1
    wsgi = {n.lower(): v for n, v in wsgi_headers}
    expected = "private, max-age=60" if private else "public, max-age=60"
    assert asgi[b"cache-control"].decode() == expected and wsgi["cache-control"] == expected
