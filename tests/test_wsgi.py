"""The plain WSGI middleware, driven by werkzeug's test client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import urllib3
from werkzeug.test import Client

from tests.support import MEMBER, EngineFactory
from vwo_heap_middleware import FlagEngine, get_flags, requires_flag
from vwo_heap_middleware.testing.gateway import LocalGateway
from vwo_heap_middleware.wsgi import ENVIRON_KEY, FlagRequired, HeapFlagsWSGIMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


@requires_flag("premium_checkout")
def premium_body() -> bytes:
    return b"premium"


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    flags = environ[ENVIRON_KEY]
    assert id(get_flags()) == id(flags)
    if environ["PATH_INFO"] == "/premium":
        try:
            body = premium_body()
        except FlagRequired as refused:
            start_response(f"{refused.status} Refused", [("Content-Type", "text/plain")])
            return [b"no"]
    else:
        body = json.dumps({"identity": flags.identity, "flags": flags.to_dict()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Vary", "Accept-Encoding")])
    return [body]


@pytest.fixture
def client(shop_gateway: LocalGateway, make_engine: EngineFactory) -> Client:
    engine = make_engine(shop_gateway, flags=("premium_checkout",))
    return Client(HeapFlagsWSGIMiddleware(app, engine=engine))


def test_flags_in_environ(client: Client) -> None:
    response = client.get("/", headers=MEMBER)
    assert response.json == {
        "identity": "vip@example.com",
        "flags": {
            "premium_checkout": {
                "enabled": True,
                "variables": {"tier_label": "<b>Gold</b>"},
                "reason": "targeted",
            }
        },
    }
    assert response.headers["Vary"] == "Accept-Encoding, Cookie, X-Heap-Identity"


def test_requires_flag_under_plain_wsgi(client: Client) -> None:
    assert client.get("/premium", headers=MEMBER).get_data() == b"premium"
    refused = client.get("/premium")
    assert refused.status_code == 404


def test_utf8_header_identity(client: Client) -> None:
    response = client.get(
        "/", headers={"X-Heap-Identity": "Zoë@example.com".encode().decode("latin-1")}
    )
    assert response.json is not None and response.json["identity"] == "Zoë@example.com"


def test_needs_an_engine() -> None:
    with pytest.raises(TypeError, match="engine=FlagEngine"):
        HeapFlagsWSGIMiddleware(app, engine=None)  # type: ignore[arg-type]


def test_engine_is_shared(client: Client, shop_gateway: LocalGateway) -> None:
    assert isinstance(client.application.engine, FlagEngine)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("target", "location"),
    [("/日本?from=premium", "/%E6%97%A5%E6%9C%AC?from=premium"), ("//evil.example", None)],
)
def test_a_refusal_with_any_redirect_is_no_server_error(
    target: str, location: str | None, shop_gateway: LocalGateway, make_engine: EngineFactory
) -> None:
    """Over a real socket (wsgiref, which refuses headers it cannot encode, as gunicorn does):
    a redirect the app took from the client is encoded, or refused, never a 500."""

    def refusing(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise FlagRequired("premium_checkout", redirect_to=target)

    engine = make_engine(shop_gateway)
    server = make_server(
        "127.0.0.1", 0, HeapFlagsWSGIMiddleware(refusing, engine=engine), handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        response = urllib3.PoolManager().request(
            "GET", f"http://127.0.0.1:{server.server_port}/premium", redirect=False
        )
    finally:
        server.shutdown()
        server.server_close()
    if location is None:
        assert response.status == 404
    else:
        assert (response.status, response.headers["Location"]) == (302, location)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log in the test output."""
