"""VWO user aliasing: a visitor who logs in keeps the VWO user id (so the bucket) they had as
Heap's anonymous ``userId``.

As VWO's SDK does it (``wingify/utils/aliasing_util.py``, ``wingify_client.py``): the gateway
keeps records ``{userId, aliasId}``; before every decision, conversion and attribute the
call's user id is looked up (``/user-alias/getAliasUserId``) and replaced by the ``userId`` of
the record whose ``aliasId`` it is. The first id is canonical: Heap's anonymous ``userId``; the
identity becomes its alias (``/user-alias/setUserAlias``, ``userId`` = anonymous, ``aliasId`` =
identity), so after the login the identity resolves to the id the visitor was bucketed by.

Unlike the SDK, where the app calls ``set_alias``: lookups are cached like memberships
(``GatewayLookups.aliases``); a link is made here when a request shows an identity beside
Heap's anonymous ``userId`` and the identity has no alias yet (ask before set: a second device
keeps the first one's bucket), once per pair (once per fleet with Redis), from a thread, never on
the response's path; and only for an identity the resolver gave, unless
``alias_client_identities`` (Heap's cookie and the header can name anyone).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..evaluation.caches import ExpiringMap
from ..evaluation.custom_events import QUEUED, Tracked
from ..evaluation.outcome import Answer, AnswerStatus, Event
from ..identity import short_hash
from ..visitor import Visitor
from .cached_lookup import CachedLookup, Started
from .client import Gateway

if TYPE_CHECKING:
    from .events import EventSpool
    from .redis_store import RedisStore

logger = logging.getLogger("vwo_heap_middleware")

LINKED = "user %s linked to the anonymous id it logged in from"
LINK_FAILED = "could not link user %s to its anonymous id (%s); tried again at its next login"


def aliased(visitor: Visitor, user_id: str) -> Visitor:
    """``visitor`` under ``user_id``, the id their own is an alias of."""
    context = {**(visitor.context or {}), "id": user_id}
    return Visitor(visitor.heap, user_id, context, visitor.aliased_from or visitor.user_id)


def link_candidate(config: Config, visitor: Visitor) -> str | None:
    """The Heap anonymous ``userId`` this visitor's identity may be linked to, or None: an
    identity (the resolver's, or any trusted one with ``alias_client_identities``) beside
    the ``userId`` of Heap's cookie."""
    heap = visitor.heap
    if heap.identity is None or heap.user_id in (None, heap.identity):
        return None
    if visitor.user_id != heap.identity:
        return None
    if heap.source != "resolver" and not config.alias_client_identities:
        return None
    return heap.user_id


class AliasLinks:
    """Resolves visitors through their alias answers and links new logins, in the background;
    with aliasing off (``GatewayLookups.aliases`` None), every visitor is their own."""

    def __init__(
        self,
        config: Config,
        aliases: CachedLookup[str, str] | None,
        executor: Callable[[], concurrent.futures.Executor],
        timed: Callable[..., Any],
        client: Callable[[], Gateway],
        shared: RedisStore | None = None,
    ) -> None:
        """``aliases``: the lookups' (None: aliasing off); ``executor`` their thread pool;
        ``timed(kind, call, *args)`` tells the observers how long a call took."""
        self._config = config
        self._aliases = aliases
        self._executor = executor
        self._timed = timed
        self._client = client
        self._shared = shared
        self.linked = 0
        self.linked_elsewhere = 0  # another worker of the fleet (Redis) was linking it first
        self.link_failures = 0
        self.reset()

    def reset(self) -> None:
        """Forget the links under way (after a fork)."""
        self._lock = threading.Lock()
        self._linking: ExpiringMap[str, str] = ExpiringMap(self._config.cache_size)

    def resolve(
        self, visitor: Visitor, answer: Answer[str], *, link: bool = True
    ) -> tuple[Visitor, float]:
        """``visitor`` under the id VWO knows them by, and until when that holds (-inf: not
        to be reused: the alias is not known fresh). A new login is linked unless ``link``
        is False (an explanation only says what a request would do)."""
        user_id = visitor.user_id
        if user_id is None or answer.value is None:
            return visitor, -math.inf
        canonical, expires = answer.value, answer.expires
        if answer.status is not AnswerStatus.FRESH:
            expires = -math.inf
        elif canonical == user_id and (anonymous := link_candidate(self._config, visitor)):
            canonical = anonymous
            if link:
                expires = self.link(anonymous, user_id)
        return (visitor if canonical == user_id else aliased(visitor, canonical)), expires

    def begin(
        self, visitor: Visitor, on_loop: bool, ready: bool = True
    ) -> tuple[Visitor, float, Started[str, str] | None]:
        """The visitor under their alias and until when it holds, when it is known now; else
        the lookup under way (``landed`` when it is over). Not ``ready``: nothing is asked."""
        if visitor.user_id is None or self._aliases is None or not ready:
            return visitor, math.inf, None
        started = self._aliases.begin([visitor.user_id], on_loop=on_loop)
        if started.pending:
            return visitor, math.inf, started
        return (*self.landed(visitor, started), None)

    def landed(
        self, visitor: Visitor, started: Started[str, str], *, link: bool = True
    ) -> tuple[Visitor, float]:
        """``resolve`` on a lookup's answer (a timeout if it is still under way)."""
        assert self._aliases is not None
        return self.resolve(visitor, started.finish()[str(visitor.user_id)], link=link)

    def spool(
        self,
        visitor: Visitor,
        build: Callable[[Visitor], Event | Tracked],
        events: EventSpool,
    ) -> Tracked:
        """A conversion or attribute sync: ``build(visitor)``'s event (or why there is none),
        spooled as the id the visitor's is an alias of: now if that is known, else from a
        lookup thread when the lookup lands (the request does not wait; a flush does)."""
        made = build(visitor)
        if isinstance(made, Tracked):
            return made

        def spooled(found: Visitor) -> None:
            again = made if found is visitor else build(found)
            if isinstance(again, Event):
                events.add(again)

        found, _, started = self.begin(visitor, on_loop=False)
        if started is None:
            spooled(found)
            return QUEUED
        coming: concurrent.futures.Future[None] = concurrent.futures.Future()
        events.expect(coming)

        def landed(_: object) -> None:
            try:
                spooled(self.landed(visitor, started)[0])
            finally:
                coming.set_result(None)

        (flight,) = started.pending.values()
        flight.add_done_callback(landed)
        return QUEUED

    def waited(self, visitor: Visitor, timeout: float) -> Visitor:
        """The visitor under their alias, waiting at most ``timeout`` s; linking nothing."""
        found, _, started = self.begin(visitor, on_loop=False)
        if started is None:
            return found
        concurrent.futures.wait(started.pending.values(), timeout=timeout)
        return self.landed(visitor, started, link=False)[0]

    def known(self, visitor: Visitor) -> Visitor:
        """The visitor under their alias as far as it is known now, asking nobody."""
        if visitor.user_id is None or self._aliases is None:
            return visitor
        answer = self._aliases.fallback(visitor.user_id, AnswerStatus.FAILED)  # fresh or older
        return self.resolve(visitor, answer, link=False)[0]

    def link(self, user_id: str, alias_id: str) -> float:
        """Make ``alias_id`` an alias of ``user_id``, once: at once in this process's cache,
        at the gateway from a lookup thread. Returns when the cached answer expires."""
        assert self._aliases is not None
        now = time.monotonic()
        expires = self._aliases.put(alias_id, user_id)
        with self._lock:
            if self._linking.get(alias_id, now) is not None:
                return expires
            self._linking.put(alias_id, user_id, now + self._config.non_membership_ttl)
        try:
            self._executor().submit(self._send, user_id, alias_id)
        except RuntimeError:  # the engine is closing: the next login links it
            self._forget(alias_id)
        return expires

    def _send(self, user_id: str, alias_id: str) -> None:
        who = short_hash(alias_id, key=self._config.log_key)
        if self._shared is not None:
            linked = self._shared.claim_alias(alias_id, user_id)
            if linked is not None:  # another worker was first: its link stands
                self.linked_elsewhere += 1
                if self._aliases is not None:
                    self._aliases.put(alias_id, linked)
                return
        try:
            self._timed("set_alias", self._client().set_alias, user_id, alias_id)
        except Exception as error:  # GatewayError, or a bug: on a pool thread, said here
            self.link_failures += 1
            logger.warning(LINK_FAILED, who, error)
            self._forget(alias_id)
            if self._shared is not None:
                self._shared.release_alias(alias_id)
            return
        self.linked += 1
        logger.info(LINKED, who)

    def _forget(self, alias_id: str) -> None:
        self._linking.put(alias_id, "", -math.inf)  # expired: the next login links it

    def stats(self) -> dict[str, int]:
        if self._aliases is None:
            return {}
        return {
            "aliases_linked": self.linked,
            "aliases_linked_elsewhere": self.linked_elsewhere,
            "alias_link_failures": self.link_failures,
        }
