"""Membership lookups for async requests on the event loop itself: no thread hand-off."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11

from ..config import Config
from .client import MEMBERSHIP_PATH, GatewayError, member, membership_query, parse_answer

_timeout: Any = getattr(asyncio, "timeout", None)


class LoopMemberships:
    """Membership lookups for async requests on the event loop itself: no thread hand-off.

    Keep-alive sockets are driven by the running loop's ``sock_*`` calls (so a socket belongs
    to no loop and any loop may reuse it) and HTTP/1.1 is framed by h11. Plain-HTTP gateways
    only (``usable``); HTTPS gateways are asked from the engine's thread pool.
    """

    def __init__(self, config: Config, max_idle: int = 32) -> None:
        parts = urlsplit(config.gateway_url)
        self.config = config
        self.usable = parts.scheme == "http" and parts.hostname is not None
        self._host = parts.netloc
        self._address = (parts.hostname or "", parts.port or 80)
        self._resolved: Any = None
        self._idle: list[tuple[socket.socket, h11.Connection]] = []
        self._max_idle = max_idle

    async def is_member(self, list_id: str, attribute: str) -> bool:
        query = urlencode(membership_query(self.config, list_id, attribute), safe="@")
        try:
            if _timeout is not None:  # Python 3.11+: a timer, not another task
                async with _timeout(self.config.lookup_timeout):
                    status, data = await self._get(f"{MEMBERSHIP_PATH}?{query}")
            else:
                request = self._get(f"{MEMBERSHIP_PATH}?{query}")
                status, data = await asyncio.wait_for(request, self.config.lookup_timeout)
        except (OSError, asyncio.TimeoutError, h11.ProtocolError) as exc:
            raise GatewayError(f"{MEMBERSHIP_PATH}: {type(exc).__name__}") from None
        return member(parse_answer(MEMBERSHIP_PATH, status, data))

    async def _get(self, target: str) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        sock, conn = self._reuse() or await self._connect(loop)
        try:
            request = h11.Request(method="GET", target=target, headers=[("Host", self._host)])
            await loop.sock_sendall(
                sock, conn.send(request) + (conn.send(h11.EndOfMessage()) or b"")
            )
            status, body = 0, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await loop.sock_recv(sock, 65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("the gateway closed the connection")
        except BaseException:
            sock.close()
            raise
        if (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and len(self._idle) < self._max_idle
        ):
            conn.start_next_cycle()
            self._idle.append((sock, conn))
        else:
            sock.close()
        return status, bytes(body)

    def _reuse(self) -> tuple[socket.socket, h11.Connection] | None:
        """An idle connection the gateway has not closed meanwhile (an idle timeout, a
        restart), else None; closed ones are dropped."""
        while self._idle:
            sock, conn = self._idle.pop()
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":  # closed by the gateway
                    raise ConnectionResetError
            except BlockingIOError:  # nothing to read: alive and idle
                return sock, conn
            except OSError:
                pass
            sock.close()  # closed, or it sent what nobody asked for
        return None

    async def _connect(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[socket.socket, h11.Connection]:
        if self._resolved is None:
            found = await loop.getaddrinfo(*self._address, type=socket.SOCK_STREAM)
            self._resolved = found[0]
        family, kind, proto, _, address = self._resolved
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock, h11.Connection(h11.CLIENT)

    def close(self) -> None:
        """Close the idle connections (engine closing, or a forked child's copies)."""
        idle, self._idle = self._idle, []
        for sock, _ in idle:
            sock.close()
