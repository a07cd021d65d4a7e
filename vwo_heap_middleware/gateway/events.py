"""Impressions and the SDK's other events: spooled, sent in batches, retried, flushed.

An impression is VWO's record that a visitor saw a variation, so none is dropped silently. The
SDK's sends are captured as they are made (no network on the request path) into a bounded,
per-process spool. One daemon thread sends them in VWO's batch format (``POST
/server-side/batch-events-v2``, body ``{"ev": [...]}``, one POST per batch): when the gateway
fails it keeps them and retries with capped, jittered back-off; when it returns the backlog
drains batch by batch. Only a full spool drops (counted, logged once per interval); ``close()``
flushes within a deadline and logs what was left; a batch the gateway refuses as malformed
(HTTP 4xx) is dropped, counted and logged.

With a state directory every event is also journaled before ``add`` returns (``state.journal``):
a killed process's events are sent by the next process to start, and what ``close()`` could not
send stays for it too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode

from ..config import Config
from ..evaluation.outcome import Event
from ..state.files import Owner
from ..state.journal import COMPACT_AT, Journal, orphans
from .breaker import Backoff
from .client import EventClient, Sent

logger = logging.getLogger("vwo_heap_middleware")

EVENTS_DROPPED = "dropped %d events: %s (%d in all; logged every 10 s)"
SPOOL_FULL = "the event spool is full (%d events)"
JOURNAL_FULL = "the journal's disk budget is spent (VWO_HEAP_SPOOL_MAX_BYTES)"
SPOOL_CLOSED = "the engine was closed"
EVENTS_UNSENDABLE = "%d events cannot be sent as they are (%s): dropped"
EVENTS_REFUSED = "the gateway refused a batch of %d events (%s): dropped"
EVENTS_RETRY = "cannot send %d events (%s); %d waiting, next try in %.1f s"
EVENTS_LEFT = "closing with %d events not sent: lost"
EVENTS_KEPT = "closing with %d events not sent: kept in %s for the next process to send"
EVENTS_RECOVERED = "%d events a stopped process left in %s: sending them (%d may be sent twice)"
EVENTS_CLOSED = "event spool closed: %d events sent, %d dropped"
BATCH_PATH = "/server-side/batch-events-v2"
BATCH_QUERY = ("a", "env", "sn", "sv")  # what a batch's request takes from its events' queries
ORPHAN_SCAN = 10.0  # seconds between looks for journals stopped processes left
BATCH_SIZE = 500
FIRST_RETRY, MAX_RETRY = 0.5, 30.0
DROP_LOG_INTERVAL = 10.0
LINGER = 0.05  # seconds a small batch waits for company before it is sent
FLUSH_RETRY = 0.25  # while flushing, seconds between tries of a failing gateway


class EventSpool:
    """The engine's events for VWO, sent in batches from a daemon thread, retried, flushed.

    ``first`` (with Redis): is this impression the first of its kind across workers? Others are
    counted as ``duplicates``. ``deliver=False`` (the offline engine): events are counted in
    ``held``, never sent."""

    def __init__(
        self,
        maxsize: int,
        gateway_url: str,
        deliver: bool = True,
        first: Callable[[Event], bool] | None = None,
        *,
        ca_file: str | None = None,
        batch_size: int = BATCH_SIZE,
        linger: float = LINGER,
        state_dir: str | None = None,
        owner: Owner | None = None,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.maxsize = maxsize
        self.first = first  # with Redis: is this the first of its kind across workers?
        self.gateway_url = gateway_url
        self.deliver = deliver
        self.batch_size = batch_size
        self.linger = linger
        self.ca_file = ca_file
        self.state_dir = state_dir if deliver else None
        self.owner = owner or Owner("", "")  # whose journals (account and SDK key) are ours
        self.max_bytes = max_bytes
        self.reset()

    @classmethod
    def of(cls, config: Config, deliver: bool, first: Callable[[Event], bool] | None) -> EventSpool:
        """The spool a ``Config`` asks for (its size, gateway, CA file, state directory)."""
        return cls(
            config.event_spool_size,
            config.gateway_url,
            deliver,
            first,
            ca_file=config.gateway_ca_file,
            state_dir=config.state_dir,
            owner=Owner(str(config.account_id), str(config.sdk_key)),
            max_bytes=config.spool_max_bytes,
        )

    def reset(self) -> None:
        """Start afresh: in a forked child (its events and counts are its own; it has no sender
        thread; a parent's journal stays the parent's) or after ``close()``."""
        inherited = getattr(self, "_journal", None)
        if inherited is not None:
            inherited.forget()
        self.sent = self.dropped = self.held = self.duplicates = 0
        self.recovered = self.maybe_resent = 0
        self.closed = False
        self._journal: Journal | None = None  # a parent's stays the parent's
        self._seq = self._delivered = 0  # the spool holds events _delivered+1 .. _seq, in order
        self._scan_at = 0.0  # when to look for stopped processes' journals again
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._spool: collections.deque[Event] = collections.deque()
        self._in_flight = 0
        self._coming: set[concurrent.futures.Future[None]] = set()  # ``expect``-ed, not added
        self._flushing = False
        self._retry_at = self._failed_at = 0.0
        self._thread: threading.Thread | None = None
        self._client = EventClient(self.ca_file)
        self._dropped_since, self._drop_logged_at = 0, -DROP_LOG_INTERVAL

    def start(self) -> None:
        """With a state directory: open this process's journal and send what stopped processes
        left (their journals); else nothing until the first event."""
        if self.state_dir is None or self._journal is not None:
            return
        self._journal = Journal.open(self.state_dir, self.max_bytes, self.owner)
        self._adopt_orphans()
        with self._lock:  # it looks for orphans every ORPHAN_SCAN s, events or not
            self._start_thread()

    def _adopt_orphans(self) -> None:
        """Take over the journals stopped processes left (at start, then every
        ``ORPHAN_SCAN`` s: a worker that outlived its master may stop after we started)."""
        assert self.state_dir is not None
        self._scan_at = time.monotonic() + ORPHAN_SCAN
        journal = self._journal
        if journal is None or journal.broken:
            return  # theirs stay on disk for a process that can journal them
        for orphan in orphans(self.state_dir, self.owner, journal.family):
            for event in orphan.events:
                self._keep(event)
            journal.sync(force=True)  # in ours before theirs goes
            self.recovered += len(orphan.events)
            self.maybe_resent += orphan.maybe_sent
            if orphan.events:
                where = orphan.files[0][0]
                logger.warning(EVENTS_RECOVERED, len(orphan.events), where, orphan.maybe_sent)
            orphan.release(remove=not journal.broken)  # ours failed: sent twice, not lost

    def add(self, event: Event) -> None:
        """Keep an event for sending (journaled first, with a state directory); never blocks
        on the network."""
        if not self.deliver:
            self.held += 1
            return
        if self.first is not None and not self.first(event):
            self.duplicates += 1  # another worker sent this impression already
            return
        self._keep(event)

    def expect(self, coming: concurrent.futures.Future[None]) -> None:
        """An event on its way (its visitor's alias is being looked up): ``flush`` and
        ``close`` wait for ``coming`` to be done (the event added, or refused) first."""
        with self._lock:
            self._coming.add(coming)
        coming.add_done_callback(self._arrived)

    def _arrived(self, coming: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._coming.discard(coming)

    def _keep(self, event: Event) -> None:
        journaled = self._journal is not None and not self._journal.broken
        entry = Journal.entry(event) if journaled else b""  # made outside the lock
        with self._lock:
            if self.closed:
                self._drop(1, SPOOL_CLOSED)
                return
            if len(self._spool) >= self.maxsize:
                self._drop(1, SPOOL_FULL % self.maxsize)
                return
            journal = self._journal if entry else None
            if journal is not None:
                if journal.size + len(entry) + 16 > journal.max_bytes:
                    self._drop(1, JOURNAL_FULL)
                    return
                journal.size += len(entry) + 16
                journal.writers += 1
            self._seq += 1
            seq = self._seq
            self._spool.append(event)
            if len(self._spool) == self.batch_size:
                self._wake.notify_all()
            self._start_thread()
        if journal is not None:
            journal.write(seq, entry)  # to the OS before the response: no lock held
            with self._lock:
                journal.writers -= 1

    def _start_thread(self) -> None:
        """(Holding the lock.) The sender thread, once."""
        if self._thread is None and not self.closed:
            self._thread = threading.Thread(target=self._run, name="vwo-heap-events", daemon=True)
            self._thread.start()

    def stats(self) -> dict[str, int]:
        return {
            "events_sent": self.sent,
            "events_dropped": self.dropped,
            "events_held": self.held,
            "events_queued": len(self._spool) + self._in_flight,
            "events_duplicates": self.duplicates,
            "events_recovered": self.recovered,
            "events_maybe_resent": self.maybe_resent,
        }

    def flush(self, timeout: float) -> bool:
        """Send what is spooled now (retrying at once), waiting at most ``timeout`` s; True
        if nothing is left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            coming = list(self._coming)
        if coming:
            concurrent.futures.wait(coming, timeout=max(deadline - time.monotonic(), 0.0))
        with self._lock:
            self._flushing = True
            self._wake.notify_all()
            try:
                while (self._spool or self._in_flight) and self._thread is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                return not (self._spool or self._in_flight or self._coming)
            finally:
                self._flushing = False

    def close(self, timeout: float) -> None:
        """Flush within ``timeout`` s, stop the thread, and log what could not be sent."""
        self.flush(timeout)
        with self._lock:
            self.closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        with self._lock:
            left = len(self._spool) + self._in_flight
            self._spool.clear()
            journal, self._journal = self._journal, None
            kept = left if journal is not None and not journal.broken else 0
            self.dropped += left - kept
        if journal is not None:
            self._retire(journal, drained=not left)
        if kept:
            logger.warning(EVENTS_KEPT, kept, journal.path if journal else "")
        elif left:
            logger.error(EVENTS_LEFT, left)
        logger.info(EVENTS_CLOSED, self.sent, self.dropped)

    def _run(self) -> None:
        backoff = Backoff(FIRST_RETRY, MAX_RETRY, jitter=True)  # workers do not retry in step
        while True:
            with self._lock:
                batch = self._next_batch()
                if batch is None:
                    return
                self._in_flight = len(batch)
                first = self._delivered + 1
                journal = self._journal
            if journal is not None:
                self._mark(journal, journal.sync)
                if not batch:  # woken for the journal's housekeeping
                    if time.monotonic() >= self._scan_at:
                        self._adopt_orphans()
                    continue
                self._mark(journal, journal.flight, first, first + len(batch) - 1)
            try:
                sent = self._send(batch)
            except Exception as error:  # a batch that cannot be sent as it is, ever
                logger.error(EVENTS_UNSENDABLE, len(batch), f"{type(error).__name__}: {error}")
                sent = Sent(400, error=type(error).__name__)
            resolved = sent.error is None or (sent.status is not None and 400 <= sent.status < 500)
            if resolved and journal is not None:
                self._mark(journal, journal.delivered, first + len(batch) - 1)
            with self._lock:
                self._in_flight = 0
                if resolved:
                    self._delivered += len(batch)
                if sent.error is None:
                    self.sent += len(batch)
                    backoff.reset()
                    self._retry_at = 0.0
                elif resolved:
                    self.dropped += len(batch)
                    logger.error(EVENTS_REFUSED, len(batch), sent.error)
                else:  # keep them, in order, for the next try
                    self._spool.extendleft(reversed(batch))
                    wait = backoff.next()
                    self._failed_at = time.monotonic()
                    self._retry_at = self._failed_at + wait
                    logger.warning(EVENTS_RETRY, len(batch), sent.error, len(self._spool), wait)
                self._wake.notify_all()
                compact = journal is not None and self._compactable(journal)
            if compact:
                self._compact()

    def _mark(self, journal: Journal, write: Callable[..., None], *args: int) -> None:
        """The sender's bookkeeping in ``journal``, unless it was closed or replaced meanwhile
        (a send can outlast ``close()``); counted as a writer, so ``close()`` waits for it."""
        with self._lock:
            if journal is not self._journal:
                return
            journal.writers += 1
        try:
            write(*args)
        finally:
            with self._lock:
                journal.writers -= 1

    def _compactable(self, journal: Journal) -> bool:
        """(Holding the lock.) The journal is large, and at least half its events delivered:
        copying the rest costs no more than what was written (compaction stays linear)."""
        delivered = self._delivered - journal.first + 1
        return journal.size > COMPACT_AT and delivered >= len(self._spool)

    def _compact(self) -> None:
        """(Sender thread, no batch in flight.) Copy the events not yet delivered into the
        journal's next generation and remove the old one: the disk holds what is left to send.
        Requests write to the new generation from the switch on; the copy is made outside the
        lock."""
        old = self._journal
        new = old.next() if old is not None else None
        if old is None or new is None:
            return  # (logged) the old one keeps growing; its budget drops what it cannot hold
        with self._lock:
            self._journal = new
            new.first = self._delivered + 1
            pending = list(self._spool)
        entries = [Journal.entry(event) for event in pending]
        with self._lock:
            new.size += sum(len(entry) + 16 for entry in entries)
        new.copy(new.first, entries)
        new.sync(force=True)
        self._retire(old, drained=not new.broken)

    def _retire(self, journal: Journal, drained: bool) -> None:
        """Close a journal no longer ``self._journal`` once the writes under way in it (a
        request's, the sender's bookkeeping) are done."""
        with self._lock:
            while journal.writers:
                self._wake.wait(0.001)
        journal.close(drained)

    def _next_batch(self) -> list[Event] | None:
        """Wait (holding the lock) for a batch worth sending now; None once closed; ``[]``
        when the journal is due a sync or an orphan scan."""
        lingered = False
        while not self.closed:
            journal = self._journal
            if journal is not None and (journal.due() or time.monotonic() >= self._scan_at):
                return []
            now = time.monotonic()
            # A flush retries sooner than the back-off, but not in a tight loop.
            retry_at = (
                min(self._retry_at, self._failed_at + FLUSH_RETRY)
                if self._flushing
                else self._retry_at
            )
            if self._spool and now >= retry_at:
                if len(self._spool) >= self.batch_size or self._flushing or lingered:
                    return self._take_batch()
                lingered = True  # let a batch gather, briefly
                self._wake.wait(self.linger)
            elif self._spool:
                self._wake.wait(min(retry_at - now, 1.0))
            else:
                self._wake.wait(1.0)
        return None

    def _take_batch(self) -> list[Event]:
        """(Holding the lock.) Up to ``batch_size`` events from the front of the spool that
        share the first one's account, SDK key and SDK: one batch goes with one key, and an
        event that cannot be sent fails nobody else's."""
        spool = self._spool
        first = spool[0].query
        kind = tuple(first.get(name) for name in BATCH_QUERY)
        batch = [spool.popleft()]
        while spool and len(batch) < self.batch_size:
            query = spool[0].query
            if query is not first and tuple(query.get(name) for name in BATCH_QUERY) != kind:
                break
            batch.append(spool.popleft())
        return batch

    def _send(self, batch: list[Event]) -> Sent:
        """POST one batch (its events share account, SDK key and SDK: ``_next_batch``)."""
        first = batch[0].query
        query = {name: first[name] for name in BATCH_QUERY if name in first}
        url = f"{self.gateway_url}{BATCH_PATH}?{urlencode(query)}"
        headers = {"Authorization": str(query.get("env", "")), "Content-Type": "application/json"}
        body = b'{"ev":[' + b",".join(event.data for event in batch) + b"]}"  # each encoded once
        return self._client.send("POST", url, headers=headers, body=body, timeout=5.0)

    def _drop(self, count: int, why: str) -> None:
        """Count a drop (holding the lock); log at most once per interval."""
        self.dropped += count
        self._dropped_since += count
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            logger.error(EVENTS_DROPPED, self._dropped_since, why, self.dropped)
            self._dropped_since, self._drop_logged_at = 0, now
