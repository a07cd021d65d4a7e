"""Gateway lookups from an event loop, with no thread and no task per lookup.

Each loop keeps its own keep-alive connections (asyncio ``Protocol``/``Transport``, TLS too),
which the loop watches: a connection the gateway closes leaves the pool as it closes. A lookup
writes its preformatted request in one call and gets back a loop future the connection resolves
from ``data_received``; a deadline timer fails it (and closes the connection: an answer would
come out of step). Nothing a caller does to the future reaches other callers: each lookup has
its own. The connections close with their loop (a keeper task the loop cancels at its end), on
``close()``, and are forgotten after a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..config import Config
from .client import (
    GatewayError,
    LookupTargets,
    alias_answer,
    member,
    parse_answer,
    user_details,
)
from .wire import Endpoint, Reader, Response

T = TypeVar("T")
Convert = Callable[[Response], T]


class LoopGateway:
    """Memberships and user details from the running event loop; see the module's docstring."""

    def __init__(self, config: Config, *, parser: str | None = None, max_idle: int = 64) -> None:
        self.endpoint = Endpoint.of(config, parser)
        self.usable = self.endpoint is not None
        self._timeout = config.lookup_timeout
        self._targets = LookupTargets(config)
        self._max_idle = max_idle
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = (
            weakref.WeakKeyDictionary()
        )

    def is_member(self, list_id: str, attribute: str) -> asyncio.Future[bool]:
        target = self._targets.membership(list_id, attribute)
        return self.request(target, functools.partial(_membership, target))

    def user_details(
        self, user_agent: str | None, ip_address: str | None
    ) -> asyncio.Future[dict[str, Any]]:
        target = self._targets.user_details(user_agent, ip_address)
        return self.request(target, functools.partial(_user_details, target))

    def alias_of(self, user_id: str) -> asyncio.Future[str]:
        target = self._targets.alias(user_id)
        return self.request(target, functools.partial(_alias, user_id, target))

    def request(self, target: str, convert: Convert[T]) -> asyncio.Future[T]:
        """GET ``target`` from the running loop; the future holds ``convert(response)`` or a
        ``GatewayError`` within the lookup timeout."""
        assert self.endpoint is not None
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Pool(loop, self.endpoint, self._max_idle)
        waiter: asyncio.Future[T] = loop.create_future()
        pool.send(target, convert, waiter, time.monotonic() + self._timeout)
        return waiter

    def idle(self) -> int:
        """Idle connections kept, over every loop (for tests and stats)."""
        return sum(len(pool.idle) for pool in list(self._pools.values()))

    def close(self) -> None:
        """Close every connection, each on its own loop's thread (engine closing)."""
        pools, self._pools = list(self._pools.items()), weakref.WeakKeyDictionary()
        for loop, pool in pools:
            with contextlib.suppress(RuntimeError):  # a closed loop took them down already
                loop.call_soon_threadsafe(pool.close)

    def forget(self) -> None:
        """In a forked child: the parent's loops and connections are not this process's."""
        self._pools = weakref.WeakKeyDictionary()


class _Pool:
    """One loop's connections to the gateway."""

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: Endpoint, max_idle: int) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.max_idle = max_idle
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = {close_with_loop(loop, self.close)}

    def send(
        self, target: str, convert: Convert[Any], waiter: asyncio.Future[Any], deadline: float
    ) -> None:
        while self.idle:
            connection = self.idle.pop()
            if connection.send(target, convert, waiter, deadline, reused=True):
                return
        task = self.loop.create_task(self._connect_and_send(target, convert, waiter, deadline))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect_and_send(
        self, target: str, convert: Convert[Any], waiter: asyncio.Future[Any], deadline: float
    ) -> None:
        endpoint = self.endpoint
        connecting = self.loop.create_connection(
            lambda: _Connection(self),
            endpoint.host,
            endpoint.port,
            ssl=endpoint.tls,
            server_hostname=endpoint.host if endpoint.tls else None,
        )
        try:
            _, connection = await asyncio.wait_for(connecting, max(deadline - time.monotonic(), 0))
        except (OSError, asyncio.TimeoutError) as error:
            fail(waiter, GatewayError(f"{target.split('?')[0]}: {type(error).__name__}"))
            return
        if not connection.send(target, convert, waiter, deadline, reused=False):
            fail(waiter, GatewayError(f"{target.split('?')[0]}: ConnectionResetError"))

    def release(self, connection: _Connection) -> None:
        if len(self.idle) < self.max_idle:
            self.idle.append(connection)
        else:
            connection.close()

    def lost(self, connection: _Connection) -> None:
        self.open.discard(connection)
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)

    def close(self) -> None:
        """Drop every connection now: no TLS goodbye, which would need the loop a while longer
        (at its end it has no while; the socket under a TLS transport would stay open)."""
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.abort()
        self.idle.clear()
        for task in list(self.tasks):
            task.cancel()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer resolving its waiter."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader: Reader = pool.endpoint.reader()
        self.waiter: asyncio.Future[Any] | None = None
        self.convert: Convert[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.request = b""
        self.deadline = 0.0
        self.reused = False
        self.heard = False  # a byte of the current answer came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.open.add(self)

    def send(
        self,
        target: str,
        convert: Convert[Any],
        waiter: asyncio.Future[Any],
        deadline: float,
        *,
        reused: bool,
    ) -> bool:
        """Write the request; False when this connection is gone (take another)."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.waiter, self.convert, self.deadline, self.reused = waiter, convert, deadline, reused
        self.heard = False
        self.request = self.reader.frame(target)
        self.timer = self.pool.loop.call_at(
            self.pool.loop.time() + max(deadline - time.monotonic(), 0.0), self._timed_out
        )
        self.transport.write(self.request)
        return True

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None:  # nobody asked: out of step
            self.close()
            return
        self.heard = True
        try:
            response = self.reader.feed(data)
        except ValueError as error:
            self._finish(GatewayError(f"{_path(self.request)}: {error}"))
            self.close()
            return
        if response is None:
            return
        convert = self.convert
        self._finish(None)
        if response.keep_alive:
            self.pool.release(self)
        else:
            self.close()
        if not waiter.done():
            try:
                waiter.set_result(convert(response))  # type: ignore[misc]
            except GatewayError as error:
                waiter.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.reused and not self.heard and time.monotonic() < self.deadline:
            # the gateway closed an idle connection as we wrote: one more try, a new one
            target = _target(self.request)
            convert, self.waiter = self.convert, None
            self._stop_timer()
            self.pool.send(target, convert, waiter, self.deadline)  # type: ignore[arg-type]
            return
        self._finish(GatewayError(f"{_path(self.request)}: ConnectionResetError"))

    def _timed_out(self) -> None:
        self._finish(GatewayError(f"{_path(self.request)}: TimeoutError"))
        self.close()  # its answer, if it comes, would answer the next request

    def _finish(self, error: GatewayError | None) -> None:
        waiter, self.waiter, self.convert = self.waiter, None, None
        self._stop_timer()
        if error is not None and waiter is not None:
            fail(waiter, error)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def close_with_loop(
    loop: asyncio.AbstractEventLoop, close: Callable[[], Awaitable[None] | None]
) -> asyncio.Task[None]:
    """A task that calls ``close`` when the loop ends (``asyncio.run`` and servers cancel what
    is left running then); keep a reference to it."""

    async def keep() -> None:
        try:
            await loop.create_future()
        finally:
            closing = close()
            if closing is not None:
                await closing

    return loop.create_task(keep())


def fail(waiter: asyncio.Future[Any], error: GatewayError) -> None:
    if not waiter.done():
        waiter.set_exception(error)


def _target(request: bytes) -> str:
    return request.split(b" ", 2)[1].decode("ascii")


def _path(request: bytes) -> str:
    return _target(request).split("?")[0] if request else "gateway"


def _membership(target: str, response: Response) -> bool:
    return member(parse_answer(target.split("?")[0], response.status, response.body))


def _user_details(target: str, response: Response) -> dict[str, Any]:
    return user_details(parse_answer(target.split("?")[0], response.status, response.body))


def _alias(user_id: str, target: str, response: Response) -> str:
    answer = parse_answer(target.split("?")[0], response.status, response.body)
    return alias_answer(user_id, answer)
