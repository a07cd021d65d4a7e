"""``RequestFlags``: the flags of one request, and the one per-request seam every adapter uses:
``open_request`` (``_async``) recalls a returning visitor in one lookup or resolves, builds and
decides, and sets the ``ContextVar`` ``get_flags()`` reads; ``response_headers()`` says the rest."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from . import browser
from .browser import ELEMENT_ID, SafeHTML
from .config import Config
from .decision import FlagDecision, Reason
from .engine import FlagEngine
from .evaluation.custom_events import Tracked
from .headers import ResponseHeaders, debug_entry, read_headers
from .visitor import (
    RequestFacts,
    RunSync,
    Visitor,
    build_visitor,
    resolve_identity,
    resolve_identity_async,
)

MakeRequest = Callable[[], Any]  # makes the framework's request object on first use


def open_request(
    engine: FlagEngine,
    facts: RequestFacts,
    request: Any = None,
    *,
    make_request: MakeRequest | None = None,
) -> RequestFlags:
    """Start a request (WSGI, Flask); close the result when it ends. ``make_request`` instead
    of ``request``: the request object is made only when an app hook needs it."""
    flags = _recalled(engine, facts, request, make_request)
    if flags is None:
        config = engine.config
        request = _for_hooks(config, request, make_request)
        visitor = build_visitor(config, facts, request, resolve_identity(config, request))
        flags = RequestFlags(engine, visitor, request=request, make_request=make_request)
        flags.load(config.flags, facts)
    return flags.enter()


async def open_request_async(
    engine: FlagEngine,
    facts: RequestFacts,
    request: Any = None,
    *,
    make_request: MakeRequest | None = None,
    run_sync: RunSync[Any] | None = None,
) -> RequestFlags:
    """``open_request`` for ASGI; the app's plain hooks run through ``run_sync`` if given."""
    flags = _recalled(engine, facts, request, make_request)
    if flags is None:
        config = engine.config
        request = _for_hooks(config, request, make_request)
        resolved = await resolve_identity_async(config, request, run_sync)
        if run_sync is not None and (config.fallback_user_id or config.context_enricher):
            visitor = await run_sync(lambda: build_visitor(config, facts, request, resolved))
        else:
            visitor = build_visitor(config, facts, request, resolved)
        flags = RequestFlags(engine, visitor, request=request, make_request=make_request)
        await flags.load_async(config.flags, facts)
    return flags.enter()


def _for_hooks(config: Config, request: Any, make_request: MakeRequest | None) -> Any:
    """The request object, made now when an app hook will read it."""
    if request is None and make_request is not None and config.hooks:
        return make_request()
    return request


def _recalled(
    engine: FlagEngine, facts: RequestFacts, request: Any, make_request: MakeRequest | None
) -> RequestFlags | None:
    """A returning visitor's flags, recalled by the request's facts in one lookup."""
    started = time.perf_counter()
    recalled = engine.recall(facts)
    if recalled is None:
        return None
    visitor, decisions = recalled
    flags = RequestFlags(engine, visitor, decisions, request=request, make_request=make_request)
    flags.seconds = time.perf_counter() - started
    return flags


current_flags: ContextVar[RequestFlags | None] = ContextVar("vwo_heap_flags", default=None)


def get_flags() -> RequestFlags | None:
    """The current request's flags, or None outside a request the middleware saw."""
    return current_flags.get()


class RequestFlags:
    """The flags of one request: ``flags.enabled(key)``, ``flags[key]``, ``flags.variable(...)``;
    ``flags.track(event)``. ``decisions`` made already (a returning visitor's) are given; any
    other key is decided on first access and kept for the request. ``read``: the response
    depends on the visitor (``response_headers`` adds ``Vary`` and ``Cache-Control: private``)."""

    def __init__(
        self,
        engine: FlagEngine,
        visitor: Visitor | Callable[[], Visitor],
        decisions: Mapping[str, FlagDecision] | None = None,
        *,
        request: Any = None,
        make_request: MakeRequest | None = None,
    ) -> None:
        self.engine = engine
        self._visitor = visitor  # or a function that builds them (a returning visitor)
        self._request = request
        self._make_request = make_request
        self.read = False  # the response depends on the visitor: it must Vary
        self.seconds = 0.0
        self._decisions: dict[str, FlagDecision] = dict(decisions or {})
        self._reported: set[str] = set()  # keys whose reading the observers saw
        self._token: contextvars.Token[RequestFlags | None] | None = None

    def enter(self) -> RequestFlags:
        """Make these the current request's flags (``get_flags()``) until ``close()``."""
        self._token = current_flags.set(self)
        if self.engine.observers:
            self.engine.observers.request_opened(self)
        return self

    def close(self) -> None:
        """The request is over: ``get_flags()`` no longer answers with these flags."""
        token, self._token = self._token, None
        if token is not None and self.engine.observers:
            self.engine.observers.request_closed(self)
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another context (Flask's teardown)
                current_flags.reset(token)
        self._request = self._make_request = None  # no cycle back to the request and scope

    @property
    def visitor(self) -> Visitor:
        """The visitor of this request (built now, if it was recalled)."""
        visitor = self._visitor
        if not isinstance(visitor, Visitor):
            visitor = self._visitor = visitor()
        return visitor

    @property
    def request(self) -> Any:
        """The framework's request object (made on first use), or None."""
        if self._request is None and self._make_request is not None:
            self._request = self._make_request()
        return self._request

    def __enter__(self) -> RequestFlags:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def identity(self) -> str | None:
        self.read = True
        return self.visitor.identity

    @property
    def user_id(self) -> str | None:
        self.read = True  # the VWO user id: with aliasing, the one the visitor's stands for
        return self.engine.aliases.known(self.visitor).user_id

    def load(self, keys: Iterable[str], facts: RequestFacts | None = None) -> None:
        """Decide the keys not decided yet (blocking; see ``load_async`` in async code);
        ``facts``: the request's, for the engine to recall these decisions by."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._decisions]
        if missing:
            started = time.perf_counter()
            self._decisions.update(self.engine.decide(self.visitor, missing, facts=facts))
            self.seconds += time.perf_counter() - started

    async def load_async(self, keys: Iterable[str], facts: RequestFacts | None = None) -> None:
        """Decide the keys not decided yet, without blocking the event loop."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._decisions]
        if missing:
            started = time.perf_counter()
            decided = await self.engine.decide_async(self.visitor, missing, facts=facts)
            self._decisions.update(decided)
            self.seconds += time.perf_counter() - started

    def get(self, key: str) -> FlagDecision:
        """The decision for ``key``, evaluated now if this request has not asked before."""
        self.read = True
        if key not in self._decisions:
            if not isinstance(key, str):
                return FlagDecision(str(key), False, reason=Reason.UNKNOWN_FLAG)
            self.load([key])
        decision = self._decisions[key]
        if self.engine.observers and key not in self._reported:
            self._reported.add(key)
            self.engine.observers.flag_read(self, decision)
        return decision

    __getitem__ = get

    def enabled(self, key: str) -> bool:
        return self.get(key).enabled

    def variable(self, key: str, name: str, default: Any = None) -> Any:
        """A variable of flag ``key``; ``default`` when the flag is off or lacks it."""
        decision = self.get(key)
        return decision.variable(name, default) if decision.enabled else default

    def override(self, key: str, enabled: bool, variables: dict[str, Any] | None = None) -> None:
        """Set a decision for this request only (tests, previews); reason ``override``."""
        self._decisions[key] = FlagDecision(key, enabled, dict(variables or {}), Reason.OVERRIDE)

    def __contains__(self, key: object) -> bool:
        """True when ``key`` has been decided for this request."""
        self.read = True
        return key in self._decisions

    def __iter__(self) -> Iterator[FlagDecision]:
        self.read = True
        return iter([self.get(key) for key in list(self._decisions)])

    def __len__(self) -> int:
        self.read = True
        return len(self._decisions)

    def __bool__(self) -> bool:
        return True  # ``flags or default`` must neither read (``len``) nor skip empty flags

    def track(self, event_name: str, properties: Mapping[str, Any] | None = None) -> Tracked:
        """This visitor converted (``FlagEngine.track``); never blocks, never raises."""
        return self.engine.track(self.visitor, event_name, properties)

    def set_attributes(self, attributes: Mapping[str, Any]) -> Tracked:
        """Attributes of this visitor for VWO (``FlagEngine.set_attributes``)."""
        return self.engine.set_attributes(self.visitor, attributes)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {decision.key: decision.to_dict() for decision in self}

    def client_payload(self, vwo_storage: bool = False) -> dict[str, Any]:
        """The ``client_flags`` for the browser (``browser.py``) and the user id as
        ``client_user_id`` says. It reads the visitor, flags or not (Vary, private)."""
        self.read = True
        config = self.engine.config
        decided = {key: self.get(key) for key in config.client_flags}
        user_id = browser.client_user_id(self.user_id, config)
        return browser.client_payload(decided, user_id, config.account_id, vwo_storage)

    def client_script(
        self, element_id: str = ELEMENT_ID, nonce: str | None = None, vwo_storage: bool = False
    ) -> SafeHTML:
        """``client_payload()`` as a ``<script type="application/json">`` element no value can
        break out of, for a template (``{{ flags.client_script(nonce=...) }}``)."""
        return browser.script_tag(self.client_payload(vwo_storage), element_id, nonce)

    def decided(self) -> dict[str, FlagDecision]:
        """The decisions so far, for debugging tools: not a read (no ``Vary``), no decision."""
        return dict(self._decisions)

    def __repr__(self) -> str:
        states = (f"{k}={'on' if d else 'off'}" for k, d in self._decisions.items())
        return f"<RequestFlags {', '.join(states)}>"

    def response_headers(self) -> ResponseHeaders:
        """When anything of the visitor was read: ``Vary`` with every request header the
        identity can come from (and ``User-Agent`` when a decided flag's rules read it), and
        ``Cache-Control: private``; the opt-in debug headers. ``X-Flags`` lists only flags the
        settings know (a key may come from the client), and counts as reading the visitor."""
        config = self.engine.config
        extra = []
        if config.server_timing:
            extra.append(("Server-Timing", f"flags;dur={self.seconds * 1000:.2f}"))
        listed = ""
        if config.debug_header:
            known = self.engine.knows
            listed = ", ".join(debug_entry(k, d) for k, d in self._decisions.items() if known(k))
            if listed:
                extra.append(("X-Flags", listed))
        if not (self.read or listed):
            return ResponseHeaders((), tuple(extra), None)
        user_agent = self.engine.reads_user_agent(self._decisions)
        if not extra:  # the usual response: the same headers every time
            return read_headers(config.vary, user_agent, config.cache_control_private)
        read = read_headers(config.vary, user_agent, config.cache_control_private)
        return ResponseHeaders(read.vary, tuple(extra), read.cache_control)
