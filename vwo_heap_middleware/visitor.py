"""The visitor: from a request's facts (WSGI environ or ASGI scope) to their Heap identity,
by the configured precedence, and the VWO user context in the snake_case keys the Python SDK
reads (it ignores the camelCase keys of VWO's Node sample)."""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .config import Config
from .identity import (
    ANONYMOUS,
    HeapIdentity,
    clean_identity,
    identity_from_cookies,
    identity_from_header,
    identity_from_resolver,
)

logger = logging.getLogger("vwo_heap_middleware")

CALLBACK_FAILED = (
    "%s raised %s; requests go on without it (logged once; later failures at DEBUG). If it reads "
    "what another middleware provides (a session, a login), that middleware must run first: "
    "Starlette's add_middleware adds HeapFlagsMiddleware before it; Django lists it after "
    "AuthenticationMiddleware"
)
CALLBACK_FAILED_AGAIN = "%s raised %s again"
T = TypeVar("T")
RunSync = Callable[[Callable[[], T]], Awaitable[T]]  # a framework's way to run sync code
BAD_CUSTOM_VARIABLE = "context_enricher returned %r for %r: values must be str, int, float or bool"
MAX_USER_AGENT = 512
_VARIABLE_TYPES = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the middleware reads from a request, whatever the framework."""

    cookie: str | None = None
    identity_header: str | bytes | None = None
    user_agent: str | None = None
    peer: str | None = None
    forwarded_for: str | None = None
    forwarded: str | None = None

    @classmethod
    def from_wsgi(cls, environ: Mapping[str, Any], identity_header: str) -> RequestFacts:
        """From a WSGI environ (header values are latin-1 strings there)."""
        raw_identity = environ.get("HTTP_" + identity_header.upper().replace("-", "_"))
        return cls(
            cookie=environ.get("HTTP_COOKIE"),
            identity_header=raw_identity.encode("latin-1", "replace") if raw_identity else None,
            user_agent=environ.get("HTTP_USER_AGENT"),
            peer=environ.get("REMOTE_ADDR"),
            forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
            forwarded=environ.get("HTTP_FORWARDED"),
        )

    @classmethod
    def from_asgi(cls, scope: Mapping[str, Any], identity_header: bytes) -> RequestFacts:
        """From an ASGI HTTP scope; ``identity_header`` is the lower-case header name."""
        cookie: list[str] = []
        identity: list[bytes] = []
        user_agent = forwarded_for = forwarded = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie.append(value.decode("latin-1"))
            elif name == identity_header:
                identity.append(value)  # several: joined as WSGI servers join them
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
            elif name == b"forwarded":
                forwarded = value.decode("latin-1")
        client = scope.get("client")
        return cls(
            cookie="; ".join(cookie) or None,
            identity_header=b",".join(identity) if identity else None,
            user_agent=user_agent,
            peer=client[0] if client else None,
            forwarded_for=forwarded_for,
            forwarded=forwarded,
        )


@dataclass(frozen=True, slots=True)
class Visitor:
    """The visitor of one request: Heap's view of them and their VWO user context."""

    heap: HeapIdentity
    user_id: str | None
    context: Mapping[str, Any] | None
    aliased_from: str | None = None  # the user id this one stands for (VWO user aliasing)

    @property
    def identity(self) -> str | None:
        return self.heap.identity

    def atoms(self) -> tuple[str | None, ...]:
        """This visitor as strings only, for a cache whose entries the garbage collector need
        not walk; ``from_atoms`` gives it back (for visitors no app hook shaped)."""
        context = self.context or {}
        return (
            self.heap.identity,
            self.heap.user_id,
            self.heap.source,
            self.user_id,
            context.get("user_agent"),
            context.get("ip_address"),
        )

    @classmethod
    def from_atoms(cls, atoms: tuple[str | None, ...], custom_variable: str) -> Visitor:
        identity, heap_user_id, source, user_id, user_agent, ip_address = atoms
        heap = HeapIdentity(identity, heap_user_id, source or "none")
        if user_id is None:
            return cls(heap, None, None)
        custom = {custom_variable: identity} if identity is not None else {}
        context: dict[str, Any] = {"id": user_id, "custom_variables": custom}
        if user_agent is not None:
            context["user_agent"] = user_agent
        if ip_address is not None:
            context["ip_address"] = ip_address
        return cls(heap, user_id, context)


def identify(config: Config, facts: RequestFacts, resolved: object = None) -> HeapIdentity:
    """The visitor's Heap identity, by ``config.identity_sources`` precedence.

    The first source that names an identified visitor wins; else an anonymous Heap cookie gives
    Heap's ``userId``. With ``trust_client_identity=False`` only the resolver names an identity
    and the cookie gives the ``userId`` alone: a forged one picks a bucket, never a segment."""
    cookie_identity = ANONYMOUS
    for source in config.identity_sources:
        if source == "resolver":
            found = identity_from_resolver(resolved)
            if found.is_identified and config.aliasing and "cookie" in config.identity_sources:
                found = found.beside(identity_from_cookies(facts.cookie, config.heap_app_id))
        elif not config.trust_client_identity:
            if source == "cookie":
                read = identity_from_cookies(facts.cookie, config.heap_app_id)
                cookie_identity = HeapIdentity(None, read.user_id, read.source)
            continue
        elif source == "header":
            found = identity_from_header(facts.identity_header)
        else:
            found = cookie_identity = identity_from_cookies(facts.cookie, config.heap_app_id)
        if found.is_identified:
            return found
    return cookie_identity


_failures_logged: set[tuple[str, int, type[BaseException]]] = set()


def hook_failed(hook: object, name: str, error: Exception) -> None:
    """Log a failing app hook: with its traceback the first time, briefly after that."""
    kind = (name, id(hook), type(error))
    if kind in _failures_logged:
        logger.debug(CALLBACK_FAILED_AGAIN, name, type(error).__name__)
        return
    if len(_failures_logged) < 1024:
        _failures_logged.add(kind)
    logger.error(CALLBACK_FAILED, name, type(error).__name__, exc_info=error)


def call_hook(hook: Any, request: object, name: str) -> Any:
    """Call an app-supplied hook; its failure must not fail the request."""
    try:
        return hook(request)
    except Exception as error:
        hook_failed(hook, name, error)
        return None


def resolve_identity(config: Config, request: object) -> object:
    """Call the trusted resolver from sync code (WSGI, Flask, Django's sync stack); a coroutine
    resolver is awaited here (asgiref's ``async_to_sync``: what it hands to ``sync_to_async``
    comes back to this thread, as Django expects; without asgiref, ``asyncio.run``)."""
    hook = config.identity_resolver
    resolved = call_hook(hook, request, "identity_resolver") if hook else None
    if not inspect.isawaitable(resolved):
        return resolved
    try:
        from asgiref.sync import async_to_sync
    except ImportError:  # pragma: no cover - asgiref comes with Django and flask[async]
        return asyncio.run(_awaited(hook, resolved))
    return async_to_sync(_awaited)(hook, resolved)


async def _awaited(hook: object, awaitable: Awaitable[T]) -> T | None:
    try:
        return await awaitable
    except Exception as error:
        hook_failed(hook, "identity_resolver", error)
        return None


async def resolve_identity_async(
    config: Config, request: object, run_sync: RunSync[object] | None = None
) -> object:
    """Call the trusted resolver from async code (ASGI): a coroutine is awaited; a plain one
    runs through the framework's ``run_sync`` if given (Django's ORM refuses the loop)."""
    hook = config.identity_resolver
    if hook is None:
        return None
    plain = run_sync is not None and not inspect.iscoroutinefunction(hook)
    try:
        resolved = await run_sync(lambda: hook(request)) if plain else hook(request)  # type: ignore[misc]
        return await _awaited(hook, resolved) if inspect.isawaitable(resolved) else resolved
    except Exception as error:
        hook_failed(hook, "identity_resolver", error)
        return None


def build_visitor(
    config: Config, facts: RequestFacts, request: object, resolved: object = None
) -> Visitor:
    """Identify the visitor and build their VWO user context (None when there is no user id)."""
    heap = identify(config, facts, resolved)
    user_id = heap.identity or heap.user_id
    if user_id is None and config.fallback_user_id is not None:
        user_id = clean_identity(call_hook(config.fallback_user_id, request, "fallback_user_id"))
    if user_id is None:
        return Visitor(heap, None, None)
    custom_variables: dict[str, object] = {}
    if config.context_enricher is not None:
        extra = call_hook(config.context_enricher, request, "context_enricher")
        if isinstance(extra, Mapping):
            for name, value in extra.items():
                if isinstance(name, str) and isinstance(value, _VARIABLE_TYPES):
                    custom_variables[name] = value
                else:
                    logger.warning(BAD_CUSTOM_VARIABLE, type(value).__name__, name)
    if heap.identity is not None:
        custom_variables[config.custom_variable] = heap.identity
    context: dict[str, Any] = {"id": user_id, "custom_variables": custom_variables}
    if facts.user_agent:
        context["user_agent"] = facts.user_agent[:MAX_USER_AGENT]
    ip_address = client_ip(config, facts)
    if ip_address:
        context["ip_address"] = ip_address
    return Visitor(heap, user_id, context)


def client_ip(config: Config, facts: RequestFacts) -> str | None:
    """The socket peer, or, when the peer is a trusted proxy, the client it forwarded for.

    The forwarding chain is walked from the right, past trusted proxies; the first address that
    is not one is the client. ``Forwarded`` is read when present, else ``X-Forwarded-For``.
    """
    if not config.proxy_networks:  # the server's own peer address, as it gave it
        return facts.peer or None
    peer = _address(facts.peer)
    if peer is None or not _trusted(config, peer):
        return str(peer) if peer is not None else None
    hops = _forwarded_for(facts.forwarded) if facts.forwarded else None
    if hops is None:
        hops = [h.strip() for h in facts.forwarded_for.split(",")] if facts.forwarded_for else []
    client = peer
    for hop in reversed(hops[-32:]):
        address = _address(hop)
        if address is None:
            break
        client = address
        if not _trusted(config, address):
            break
    return str(client)


def _trusted(config: Config, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address in network for network in config.proxy_networks)


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(header: str) -> list[str]:
    pairs = (
        pair.strip().partition("=") for element in header.split(",") for pair in element.split(";")
    )
    return [value for key, _, value in pairs if key.lower() == "for"]
