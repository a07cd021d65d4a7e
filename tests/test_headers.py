"""The headers a flagged response carries, on their own."""

from __future__ import annotations

from vwo_heap_middleware.headers import ResponseHeaders, merge_vary, read_headers
from vwo_heap_middleware.starlette import with_headers


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
