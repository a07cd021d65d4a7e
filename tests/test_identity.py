"""Heap identity from real-format cookies and headers, and from hostile input."""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import BREAKS_SIMPLECOOKIE, v4, v5
from vwo_heap_middleware import identity
from vwo_heap_middleware.identity import (
    ANONYMOUS,
    MAX_COOKIE_HEADER,
    HeapIdentity,
    clean_identity,
    identity_from_cookies,
    identity_from_header,
    iter_cookies,
    parse_heap_cookie,
)


@pytest.mark.parametrize(
    ("header", "app_id", "expected"),
    [
        pytest.param(
            v4(None),
            None,
            HeapIdentity(None, "4835702585115963", "cookie:v4"),
            id="v4-anonymous",
        ),
        pytest.param(
            v4("user@example.com"),
            None,
            HeapIdentity("user@example.com", "4835702585115963", "cookie:v4"),
            id="v4-identified",
        ),
        pytest.param(
            v5(None),
            None,
            HeapIdentity(None, "0012345678901234", "cookie:v5"),
            id="v5-anonymous-leading-zeros",
        ),
        pytest.param(
            v5("ada@example.com"),
            None,
            HeapIdentity("ada@example.com", "0012345678901234", "cookie:v5"),
            id="v5-identified",
        ),
        pytest.param(
            v4("old@example.com", user_id=None),
            None,
            HeapIdentity("old@example.com", None, "cookie:v4"),
            id="v3-userId-null",
        ),
        pytest.param(
            f"{v4('v4@example.com')}; {v5('v5@example.com')}",
            None,
            "v5@example.com",
            id="v5-beats-v4",
        ),
        pytest.param(
            f"{v5(None)}; {v4('stale@example.com')}",
            None,
            None,
            id="v5-anonymous-beats-v4-identified",
        ),
        pytest.param(
            f"{v5(None, app='111')}; {v5('id@example.com', app='222')}",
            None,
            "id@example.com",
            id="identified-beats-anonymous",
        ),
        pytest.param(v5("Zoë Ñandú 山田"), None, "Zoë Ñandú 山田", id="unicode"),
        pytest.param(v5("MiXeD@Example.COM"), None, "MiXeD@Example.COM", id="case-kept"),
        pytest.param(
            f"{v5('one@example.com', app='111')}; {v5('two@example.com', app='222')}",
            "222",
            "two@example.com",
            id="configured-app",
        ),
        pytest.param(
            f"{v5('one@example.com', app='111')}; {v5('two@example.com', app='222')}",
            None,
            "one@example.com",
            id="several-apps-first-wins",
        ),
        pytest.param(v5("one@example.com", app="111"), "999", None, id="other-app-ignored"),
        pytest.param(
            f"{v5('first@example.com')}; {v5('second@example.com')}",
            None,
            "first@example.com",
            id="same-name-twice",
        ),
        pytest.param(
            f"{BREAKS_SIMPLECOOKIE}; {v5('after@example.com')}",
            None,
            "after@example.com",
            id="after-cookies-that-break-simplecookie",
        ),
        pytest.param(
            "_hp5_let.1234=1732800123456; _hp2_ses_props.1234=%7B%22r%22%3A1%7D",
            None,
            None,
            id="other-heap-cookies",
        ),
        pytest.param("session=abc; theme=dark", None, None, id="no-heap-cookie"),
        pytest.param("", None, None, id="empty"),
    ],
)
def test_cookie_table(header: str, app_id: str | None, expected: HeapIdentity | str | None) -> None:
    found = identity_from_cookies(header, app_id)
    if isinstance(expected, HeapIdentity):
        assert found == expected
    else:
        assert found.identity == expected


def test_email_with_percent_40_is_decoded() -> None:
    header = '_hp5_meta.1234={"userId":"1","identity":"a%40b.com"}'.replace('"', "%22")
    assert identity_from_cookies(header).identity == "a@b.com"


def test_simplecookie_really_breaks_on_these_headers() -> None:
    jar: SimpleCookie = SimpleCookie()
    jar.load(f"{BREAKS_SIMPLECOOKIE}; {v5('after@example.com')}")
    assert not any(name.startswith("_hp5_meta") for name in jar)


def cookie(raw: str) -> str:
    return f"_hp5_meta.1234={raw}"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(cookie("%E0%A4%A"), id="bad-percent-encoding"),
        pytest.param(cookie("%FF%FE"), id="not-utf8"),
        pytest.param(cookie("not json"), id="non-json"),
        pytest.param(cookie(quote('["identity","x"]')), id="array"),
        pytest.param(cookie(quote('{"identity":["x"]}')), id="array-identity"),
        pytest.param(cookie(quote('{"identity":{"a":"b"}}')), id="object-identity"),
        pytest.param(cookie(quote('{"identity":"' + "x" * 300 + '"}')), id="300-characters"),
        pytest.param(cookie(quote('{"identity":"a\\u0000b"}')), id="control-character"),
        pytest.param(cookie(quote('{"identity":"line\\nbreak"}')), id="newline"),
        pytest.param(cookie(quote('{"identity":"null"}')), id="string-null"),
        pytest.param(cookie(quote('{"identity":"UNDEFINED"}')), id="string-undefined"),
        pytest.param(cookie(quote('{"identity":"   "}')), id="blank"),
        pytest.param(cookie(quote('{"identity":true}')), id="boolean"),
        pytest.param(cookie("x" * 5000), id="oversized"),
        pytest.param(
            cookie(quote('{"identity":"' + "a" * 4000 + '"}')), id="oversized-after-encoding"
        ),
        pytest.param(cookie("[" * 3000 + "]" * 3000), id="deep-nesting"),
        pytest.param(cookie(quote("{" + '"a":' * 1500 + "1" + "}" * 1500)), id="deep-objects"),
    ],
)
def test_hostile_cookies_mean_anonymous(header: str) -> None:
    assert identity_from_cookies(header).identity is None


def test_numeric_identity_is_its_decimal_string() -> None:
    assert (
        identity_from_cookies(cookie(quote('{"identity":12345678901234567890}'))).identity
        == "12345678901234567890"
    )


def test_user_id_kept_as_string_and_checked() -> None:
    assert parse_heap_cookie(quote('{"userId":"007"}'), "cookie:v5") == HeapIdentity(
        None, "007", "cookie:v5"
    )
    assert parse_heap_cookie(quote('{"userId":"7; drop"}'), "cookie:v5") == HeapIdentity(
        None, None, "cookie:v5"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ada@example.com", "ada@example.com"),
        (b"Zo\xc3\xab", "Zoë"),
        (b"\xff\xfe", None),
        ("", None),
        ("Null", None),
        ("x" * 255, "x" * 255),
        ("x" * 256, None),
        ("tab\there", None),
        (None, None),
        ("  ada@example.com\t ", "ada@example.com"),
        ("ada@example.com,bob@example.com", None),
        (b"ada@example.com, ada@example.com", None),
    ],
)
def test_header_identity(value: str | bytes | None, expected: str | None) -> None:
    found = identity_from_header(value)
    assert found.identity == expected
    assert found.source == ("header" if expected else "none")


def test_clean_identity_rejects_non_strings() -> None:
    assert clean_identity(42) is None
    assert clean_identity("user") == "user"


@pytest.mark.parametrize("escaped", ["x\\ud800y", "\\udfff", "ok\\ud83d"])
def test_a_lone_surrogate_in_a_cookie_is_an_anonymous_visitor(escaped: str) -> None:
    cookie = "_hp5_meta.1=" + quote('{"userId":"42","identity":"' + escaped + '"}')
    found = identity_from_cookies(cookie)
    assert found.identity is None and found.user_id == "42"
    assert clean_identity("x\ud800y") is None
    paired = "_hp5_meta.1=" + quote('{"identity":"\\ud83d\\ude00"}')
    assert identity_from_cookies(paired).identity == "\U0001f600", "a surrogate pair is an emoji"


def test_iter_cookies_keeps_going_past_broken_pairs() -> None:
    pairs = list(iter_cookies('a=1; broken; ="x"; b = two words ; c={"j":1}'))
    assert pairs == [("a", "1"), ("b", "two words"), ("c", '{"j":1}')]


@given(st.text(max_size=3000))
def test_no_cookie_header_makes_it_raise(header: str) -> None:
    found = identity_from_cookies(header)
    assert found is ANONYMOUS or isinstance(found, HeapIdentity)


@given(
    st.lists(
        st.tuples(st.sampled_from(["_hp5_meta.1", "_hp2_id.1", "x"]), st.text(max_size=200)),
        max_size=6,
    )
)
def test_no_heap_cookie_value_makes_it_raise(pairs: list[tuple[str, str]]) -> None:
    found = identity_from_cookies("; ".join(f"{n}={quote(v)}" for n, v in pairs))
    assert found.identity is None or clean_identity(found.identity) == found.identity


@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_no_header_value_makes_it_raise(value: str | bytes) -> None:
    found = identity_from_header(value)
    assert found.identity is None or len(found.identity) <= 255


# -- Cookie headers, split pair by pair as browsers send them ----------------------------


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
    monkeypatch.setattr(identity, "_said", [])
    header = "pad=" + "x" * MAX_COOKIE_HEADER + "; " + v5("late@example.com")
    with caplog.at_level("DEBUG", logger="vwo_heap_middleware"):
        for _ in range(3):
            assert identity_from_cookies(header).identity is None, "past 64 KiB: not read"
    said = [r for r in caplog.records if r.msg == identity.COOKIE_CUT]
    assert len(said) == 1 and said[0].levelname == "DEBUG"


@pytest.mark.parametrize("identity_", ["josé@example.com", "ünïcödé", "名前@例え.jp"])
def test_raw_utf8_in_a_cookie_reads_as_the_header_does(identity_: str) -> None:
    """Issue: raw (not percent-encoded) UTF-8 in a Heap cookie read as latin-1 (``josÃ©``)
    while the identity header decoded it as UTF-8: one rule for both."""
    raw = '{"userId":"1","identity":"' + identity_ + '"}'
    as_server_gives_it = raw.encode("utf-8").decode("latin-1")  # WSGI and ASGI: latin-1 text
    from_cookie = identity_from_cookies(cookie(as_server_gives_it))
    from_header = identity_from_header(identity_.encode("utf-8"))
    assert from_cookie.identity == from_header.identity == identity_
    assert identity_from_cookies(cookie(quote(raw))).identity == identity_, "percent-encoded too"
    broken = (raw.encode("utf-8")[:-4] + b'\xff"}').decode("latin-1")
    assert identity_from_cookies(cookie(broken)) is ANONYMOUS, "not UTF-8: nobody"
