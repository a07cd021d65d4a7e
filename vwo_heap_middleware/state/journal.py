"""The impression journal: with ``Config.state_dir`` each event is written to an append-only
file before the response that made it is sent, so a process killed at any moment loses none.

Each process writes ``events-<owner>-<pid>-<token>-<generation>.jsonl`` (``owner``: a digest
of the account and SDK key, ``state.files.Owner``), held under an exclusive ``flock`` for as
long as the process lives: a journal whose lock can be taken belongs to a process that died,
and the next process of the same owner to start (or to look, every few seconds) claims it and
sends what it holds. Another owner's journals are left alone; an event that is not its
journal's owner's, a line longer than ``MAX_EVENT_LINE``, a symlink or anything but a regular
file is refused (counted as damaged). A journal grown past ``COMPACT_AT`` is compacted: the
events not yet delivered are copied to the next generation, and the old file removed (a process
killed in between leaves both; the recovery merges a process's generations by event number).
Lines::

    {"s": 41, "q": {...}, "d": {...}}   an event: its number, query and body
    {"f": [41, 57]}                      a batch about to be sent
    {"a": 57}                            every event up to 57 is delivered (or refused)

Writes go to the operating system at once (a killed process loses nothing); ``fsync`` runs at
most once a second, from the sender thread (a machine that crashes loses about a second). A
closed, drained journal is removed. Delivery is at least once: what an unfinished batch held
may reach the gateway twice, and is counted.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..evaluation.outcome import Event
from .files import MAX_EVENT_LINE, Owner, check_directory, open_regular

logger = logging.getLogger("vwo_heap_middleware")

PATTERN = "events-*.jsonl"
NAME = re.compile(r"events-(?P<family>(?P<owner>[0-9a-f]{16})-\d+-[0-9a-f]+)-(?P<gen>\d+)\.jsonl")
SYNC_INTERVAL = 1.0  # seconds between fsyncs, at most
COMPACT_AT = 4 * 1024 * 1024  # a journal larger than this is compacted into its next generation
CANNOT_OPEN = "cannot journal impressions in %s (%s): they are kept in memory only"
CANNOT_WRITE = "the impression journal %s failed (%s): impressions are kept in memory only"
DAMAGED = "%d damaged lines in the impression journal %s (kept as %s)"
FOREIGN = (
    "%d files in %s are not this app's impression journals (another account or SDK key?): "
    "left alone"
)
BATCH_QUERY = ("en", "a", "env", "sn", "sv")  # what sending an event in a batch needs of its query
_QUERIES: dict[tuple[str | None, ...], bytes] = {}


class Journal:
    """This process's journal file (see the module): written by ``write`` outside any lock,
    marked by ``flight``/``delivered`` from the sender thread."""

    def __init__(
        self, path: Path, fd: int, max_bytes: int, owner: Owner, family: str, generation: int
    ) -> None:
        self.path = path
        self.owner = owner
        self.max_bytes = max_bytes
        self.family, self.generation = family, generation  # "<pid>-<token>", 0, 1, ...
        self.size = 0  # bytes written or promised (the spool counts them under its lock)
        self.writers = 0  # writes under way outside the spool's lock
        self.first = 1  # the first event number written to this generation
        self.broken = False
        self._fd = fd
        self._dirty = False
        self._synced_at = time.monotonic()

    @classmethod
    def open(
        cls,
        directory: str,
        max_bytes: int,
        owner: Owner,
        family: str | None = None,
        generation: int = 0,
    ) -> Journal | None:
        """A new journal in ``directory`` (made if missing), or None (logged) when the
        directory cannot hold one: the events then stay in memory only. The file must be new:
        a name planted in advance (a symlink, a FIFO) is refused, never written through."""
        family = family or f"{owner.tag}-{os.getpid()}-{secrets.token_hex(4)}"
        path = Path(directory) / f"events-{family}-{generation}.jsonl"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_directory(directory)
            fd = os.open(path, flags, 0o600)
        except OSError as error:
            logger.error(CANNOT_OPEN, directory, error)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            logger.error(CANNOT_OPEN, directory, error)
            return None
        return cls(path, fd, max_bytes, owner, family, generation)

    def next(self) -> Journal | None:
        """The next generation of this journal (compaction), or None if it cannot be made."""
        directory = str(self.path.parent)
        return Journal.open(directory, self.max_bytes, self.owner, self.family, self.generation + 1)

    @staticmethod
    def entry(event: Event) -> bytes:
        """An event's line without its number (made before the number is known): its body,
        and of its query what a batch needs (the same for every event of a kind: encoded once)."""
        kept = tuple(event.query.get(name) for name in BATCH_QUERY)
        query = _QUERIES.get(kept)
        if query is None:
            named = {
                name: value
                for name, value in zip(BATCH_QUERY, kept, strict=True)
                if value is not None
            }
            query = json.dumps(named, separators=(",", ":")).encode()
            if len(_QUERIES) < 64:
                _QUERIES[kept] = query
        return b',"q":' + query + b',"d":' + event.data + b"}\n"

    def write(self, seq: int, entry: bytes) -> None:
        """Write event ``seq``'s line to the OS (no lock: ``O_APPEND`` keeps lines whole)."""
        self._write(b'{"s":%d' % seq + entry)

    def copy(self, first: int, entries: list[bytes]) -> None:
        """Write events ``first``, ``first + 1``, ... in one call (compaction)."""
        lines = [b'{"s":%d' % (first + n) + entry for n, entry in enumerate(entries)]
        self._write(b"".join(lines))

    def flight(self, first: int, last: int) -> None:
        self._write(b'{"f":[%d,%d]}\n' % (first, last))

    def delivered(self, last: int) -> None:
        self._write(b'{"a":%d}\n' % last)

    def _write(self, line: bytes) -> None:
        if self.broken:
            return
        try:
            os.write(self._fd, line)
            self._dirty = True
        except OSError as error:  # a full disk, a removed directory: memory only from now
            self.broken = True
            logger.error(CANNOT_WRITE, self.path, error)

    def due(self) -> bool:
        """Written to since the last ``fsync``, a second ago or more."""
        return self._dirty and time.monotonic() - self._synced_at >= SYNC_INTERVAL

    def sync(self, force: bool = False) -> None:
        """``fsync``, when something was written and a second has passed (or ``force``)."""
        if self.broken or not self._dirty:
            return
        if force or time.monotonic() - self._synced_at >= SYNC_INTERVAL:
            self._dirty = False
            self._synced_at = time.monotonic()
            try:
                os.fsync(self._fd)
            except OSError as error:
                self.broken = True
                logger.error(CANNOT_WRITE, self.path, error)

    def forget(self) -> None:
        """In a forked child: close the parent's descriptor, which is the parent's to use (a
        child holding it would keep the parent's journal locked after the parent died)."""
        os.close(self._fd)

    def close(self, drained: bool) -> None:
        """Sync and release the journal; remove it when nothing in it is left to send (else the
        next process to start sends it)."""
        self.sync(force=True)
        try:
            if drained:
                self.path.unlink(missing_ok=True)
        except OSError as error:
            logger.error(CANNOT_WRITE, self.path, error)
        finally:
            os.close(self._fd)  # releases the lock


@dataclass
class Orphan:
    """The journal (its generations) of a process that died, claimed (locks held) until
    ``release``."""

    family: str
    files: list[tuple[Path, int]] = field(default_factory=list)  # (path, descriptor)
    events: list[Event] = field(default_factory=list)
    maybe_sent: int = 0  # events of a batch that was in flight: the gateway may have them
    damaged: int = 0

    def release(self, remove: bool = True) -> None:
        """Remove the journal, its events now in the claimer's (kept aside if damaged); or,
        ``remove`` false, leave it for another process."""
        for path, fd in self.files:
            try:
                if remove and self.damaged:
                    kept = path.with_suffix(".damaged")
                    path.rename(kept)
                    logger.error(DAMAGED, self.damaged, path, kept)
                elif remove:
                    path.unlink(missing_ok=True)
            except OSError as error:
                logger.error(CANNOT_WRITE, path, error)
            finally:
                os.close(fd)


def orphans(directory: str, owner: Owner, own: str | None) -> Iterator[Orphan]:
    """The journals of ``owner`` in ``directory`` no living process holds (``own``: this
    process's family), each claimed and read. Another owner's are left alone (said once)."""
    families: dict[str, list[tuple[int, Path]]] = {}
    foreign = 0
    for path in sorted(Path(directory).glob(PATTERN)):
        name = NAME.fullmatch(path.name)
        if name is None or name["owner"] != owner.tag:
            foreign += 1
        elif name["family"] != own:
            families.setdefault(name["family"], []).append((int(name["gen"]), path))
    if foreign and directory not in _foreign_said:
        _foreign_said.add(directory)
        logger.warning(FOREIGN, foreign, directory)
    for family, paths in families.items():
        orphan = Orphan(family)
        if _claim(orphan, [path for _, path in sorted(paths)], directory, owner):
            yield orphan


_foreign_said: set[str] = set()


def _claim(orphan: Orphan, paths: list[Path], directory: str, owner: Owner) -> bool:
    """Lock every generation of a journal and read them; False (nothing held) if a living
    process holds one. A file another process removed (and maybe replaced) between our open
    and our lock is not read: the lock must be on the file the path still names."""
    for path in paths:
        try:
            fd = open_regular(path, os.O_RDONLY)
        except OSError as error:
            if error.errno != errno.ENOENT:  # a symlink, a FIFO, a device: not a journal
                orphan.damaged += 1
                logger.error(CANNOT_OPEN, directory, error)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                logger.error(CANNOT_OPEN, directory, error)
            for _, held in orphan.files:
                os.close(held)
            return False  # a living process's
        if not _still_named(path, fd):
            os.close(fd)  # claimed and removed by another process meanwhile
            continue
        orphan.files.append((path, fd))
    if not orphan.files:
        return False
    try:
        _read(orphan, owner)
    except OSError as error:
        orphan.damaged += 1
        logger.error(CANNOT_WRITE, orphan.files[0][0], error)
    return True


def _still_named(path: Path, fd: int) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _lines(file: IO[bytes]) -> Iterator[bytes | None]:
    """The file's lines, each at most ``MAX_EVENT_LINE`` bytes; None for a longer one (read
    past in bounded pieces, never held whole)."""
    while True:
        line = file.readline(MAX_EVENT_LINE + 1)
        if not line:
            return
        if len(line) <= MAX_EVENT_LINE or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = file.readline(MAX_EVENT_LINE)
        yield None


def _event(record: dict[str, Any], owner: Owner) -> Event:
    """A journaled event, if it can be sent as it is and is its journal's owner's."""
    query, body = record["q"], record["d"]
    if not isinstance(query, dict) or not isinstance(body, dict):
        raise ValueError("not an event")
    for name, value in query.items():
        if not isinstance(value, str) or not value.isprintable() or not name.isprintable():
            raise ValueError("an event query that cannot be sent")
    if not owner.owns(query):
        raise ValueError("another owner's event")
    return Event.of(body, query)


def _read(orphan: Orphan, owner: Owner) -> None:
    """The events ``orphan``'s files hold that were not delivered, and how many may have been
    (a process's generations share its event numbers: an event copied twice counts once)."""
    events: dict[int, Event] = {}
    delivered, flights = 0, []
    for _, fd in orphan.files:
        with open(fd, "rb", closefd=False) as file:
            for line in _lines(file):
                try:
                    if line is None:
                        raise ValueError("a line too long")
                    record = json.loads(line)
                    if "s" in record:
                        events[int(record["s"])] = _event(record, owner)
                    elif "f" in record:
                        flights.append((int(record["f"][0]), int(record["f"][1])))
                    elif "a" in record:
                        delivered = max(delivered, int(record["a"]))
                    else:
                        raise ValueError("not a journal line")
                except (
                    ValueError,
                    TypeError,
                    LookupError,
                    AttributeError,
                    ArithmeticError,
                    RecursionError,
                ):
                    orphan.damaged += 1  # cut short by the kill, not ours, or hostile
    pending = sorted(seq for seq in events if seq > delivered)
    # The last batch sent may have reached the gateway (earlier ones failed, or were delivered).
    first, last = flights[-1] if flights else (0, 0)
    in_flight = range(max(first, delivered + 1), last + 1)
    orphan.events = [events[seq] for seq in pending]
    orphan.maybe_sent = sum(seq in in_flight for seq in pending)
