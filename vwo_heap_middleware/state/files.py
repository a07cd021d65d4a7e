"""What the state directory may hold, and whose it is.

The directory is shared with whatever else can write there, so nothing in it is trusted: a file
is opened only if it is a regular file, never through a symlink (in the state directory), never
in a way that blocks (a FIFO), and never read past a bound. Files are named by their ``Owner``
(a digest of the VWO account and SDK key, never the key itself), so two apps sharing one
directory leave each other's state alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

logger = logging.getLogger("vwo_heap_middleware")

MAX_SETTINGS_BYTES = 64 * 1024 * 1024  # a kept settings document or bootstrap file, at most
MAX_EVENT_LINE = 1024 * 1024  # one journal line (an event is a few KiB), at most
NOT_REGULAR = "not a regular file"
TOO_LARGE = "larger than %d bytes"
OPEN_TO_OTHERS = (
    "the state directory %s is %s: another user could plant or read its files "
    "(impressions, settings and the SDK key); make it the app user's, mode 0700"
)
_warned: set[str] = set()


@dataclass(frozen=True)
class Owner:
    """Whose state a file holds: a VWO account and its SDK key. ``tag`` names files by a
    digest of both, so another account's (or key's) journals and settings are never taken."""

    account_id: str
    sdk_key: str
    tag: str = field(init=False)

    def __post_init__(self) -> None:
        material = f"{self.account_id}\0{self.sdk_key}".encode("utf-8", "surrogatepass")
        object.__setattr__(self, "tag", hashlib.sha256(material).hexdigest()[:16])

    def owns(self, query: Mapping[str, object]) -> bool:
        """Whether an event's query is this owner's (its account and SDK key)."""
        return query.get("a") == self.account_id and query.get("env") == self.sdk_key


def open_regular(path: str | os.PathLike[str], flags: int, *, follow: bool = False) -> int:
    """A descriptor for ``path`` if it is a regular file: never through a symlink (unless
    ``follow``: a path the operator named), never blocking on a FIFO. Raises ``OSError``."""
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.fspath(path)}: {NOT_REGULAR}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str | os.PathLike[str], limit: int, *, follow: bool = False) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (see ``open_regular``)."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{os.fspath(path)}: {TOO_LARGE % limit}")
    return data


def check_directory(directory: str) -> None:
    """Say once (per directory) when it is writable by others or not this user's."""
    if directory in _warned:
        return
    try:
        info = os.stat(directory)
    except OSError:
        return  # made later, by us
    problems = []
    if info.st_uid != os.geteuid():
        problems.append(f"owned by uid {info.st_uid}, not this process's user")
    if info.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        problems.append(f"writable by others (mode {stat.S_IMODE(info.st_mode):04o})")
    if problems:
        _warned.add(directory)
        logger.warning(OPEN_TO_OTHERS, directory, " and ".join(problems))
