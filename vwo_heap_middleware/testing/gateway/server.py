"""Serve the local gateway over real HTTP: in-process for tests, or from the command line.

It is served by cheroot (CherryPy's WSGI server): keep-alive connections, as the real gateway
has them (werkzeug's development server closes every connection after one request). Stopping
it closes the listener and every open connection, as a gateway going down does.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from cheroot.ssl.builtin import BuiltinSSLAdapter
from cheroot.wsgi import Server

from ...offline.flags_file import load_flags_file, load_settings_file
from ...offline.segments_file import Segments, load_segments_file
from .app import Faults, GatewayApp
from .errors import GatewayDataError

logger = logging.getLogger("vwo_heap_middleware.testing.gateway")


def _in_a_daemon_thread(action: Callable[[], object]) -> None:
    """Run ``action`` in a daemon thread and wait: threads it starts (cheroot's workers) are
    daemons too, so a gateway nobody stopped never keeps its process from exiting."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _daemon_timer(seconds: float, action: Callable[[], object]) -> None:
    timer = threading.Timer(seconds, action)
    timer.daemon = True  # a pending refusal window never keeps the process alive
    timer.start()


def _access_log(app: Any) -> Any:
    """``app``, logging each request's method, path and status (the CLI's access log)."""

    def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: Any, *args: Any) -> Any:
            logger.info("%s %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"], status)
            return start_response(status, headers, *args)

        return app(environ, start)

    return logged


def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's error log, to ``logging`` (a client hanging up mid-TLS is not news)."""
    logger.log(level, "%s", msg, exc_info=traceback)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def load_data(
    *,
    settings_file: str | Path | None = None,
    flags_file: str | Path | None = None,
    segments_file: str | Path | None = None,
) -> tuple[dict[str, Any], Segments]:
    """Read exactly one of a settings or flags file, and an optional segments file."""
    if (settings_file is None) == (flags_file is None):
        raise GatewayDataError("give exactly one of a settings file or a flags file")
    settings = (
        load_settings_file(settings_file)
        if settings_file is not None
        else load_flags_file(flags_file)  # type: ignore[arg-type]
    )
    segments = load_segments_file(segments_file) if segments_file is not None else {}
    return settings, segments


class LocalGateway:
    """A local stand-in for the VWO FME Gateway Service, served by a threaded HTTP server.

    Use it as a context manager; it picks a free port unless given one::

        with LocalGateway(settings, {"heap_premium_users": ["ada@example.com"]}) as gateway:
            vwo.init({..., "gateway_service": {"url": gateway.url}})
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        segments: Segments | Mapping[str, Iterable[str]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        enable_control: bool = False,
        access_log: bool = False,
        tls: tuple[str | Path, str | Path] | None = None,
    ) -> None:
        self.app = GatewayApp(
            settings, segments, enable_control=enable_control, on_refuse=self._refuse_for
        )
        self.host = host
        self.port = port
        self.tls = tls  # (certificate file, private key file): served over HTTPS
        self._served = _access_log(self.app) if access_log else self.app
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_files(
        cls,
        *,
        settings_file: str | Path | None = None,
        flags_file: str | Path | None = None,
        segments_file: str | Path | None = None,
        **kwargs: Any,
    ) -> LocalGateway:
        settings, segments = load_data(
            settings_file=settings_file, flags_file=flags_file, segments_file=segments_file
        )
        return cls(settings, segments, **kwargs)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def faults(self) -> Faults:
        return self.app.faults

    def records(self) -> dict[str, Any]:
        return self.app.recorder.snapshot()

    def reset_records(self) -> None:
        self.app.recorder.reset()

    def set_settings(self, settings: Mapping[str, Any]) -> None:
        self.app.set_settings(settings)

    def set_segments(self, segments: Mapping[str, Iterable[str]]) -> None:
        self.app.set_segments(segments)

    def start(self) -> LocalGateway:
        with self._lock:
            if self._server is None:
                # Threads enough for requests held by an injected latency; idle keep-alive
                # connections hold none.
                if not self.port:  # a fixed port: cheroot sets SO_REUSEADDR only for those,
                    self.port = _free_port(self.host)  # and a restart binds it again
                server = Server((self.host, self.port), self._served, numthreads=64)
                server.error_log = _error_log  # type: ignore[method-assign]
                server.shutdown_timeout = 1.0
                server.keep_alive_conn_limit = 1024  # cheroot keeps 10 by default
                if self.tls is not None:
                    server.ssl_adapter = BuiltinSSLAdapter(*(str(p) for p in self.tls))
                _in_a_daemon_thread(server.prepare)  # binds the port now
                self.port = server.bind_addr[1]
                self._server = server
                self._thread = threading.Thread(
                    target=server.serve, name="vwo-local-gateway", daemon=True
                )
                self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection: calls fail until ``start()``."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()

    refuse_connections = stop
    accept_connections = start

    def _refuse_for(self, seconds: float) -> None:
        def cycle() -> None:
            self.stop()
            _daemon_timer(seconds, self.start)

        # From inside a request: let the response go out before the listener closes.
        _daemon_timer(0.05, cycle)

    def serve_forever(self) -> None:
        """Serve until interrupted; a refusal window (``/_gateway/refuse``) does not end it."""
        self.start()
        try:
            while True:
                time.sleep(0.5)
        finally:
            self.stop()

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.faults.clear()  # releases requests still waiting out an injected latency
        self.stop()
