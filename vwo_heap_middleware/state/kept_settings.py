"""Last-known-good settings: every revision that loads is kept (``Config.state_dir``, written
atomically; with Redis, under the account's prefix), so a process whose first fetch fails
starts from the newest kept revision at once rather than deciding nothing. A bootstrap file
(``Config.bootstrap_settings``) is the floor when nothing was kept. Settings older than
``Config.kept_settings_max_age`` are not used (and that is logged), nor are settings kept for
another account or SDK key, kept "in the future", or larger than ``MAX_SETTINGS_BYTES``: a bad
source is logged and skipped, never fatal.

With Redis, one worker of the fleet fetches per refresh interval (under a lock) and the others
read the revision it kept: the gateway sees settings requests per interval, not per worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Config
from .files import MAX_SETTINGS_BYTES, TOO_LARGE, Owner, check_directory, read_bounded

logger = logging.getLogger("vwo_heap_middleware")

FILE_PATTERN = "settings-{tag}.json"  # one per owner (account and SDK key) in a shared dir
CLOCK_SKEW = 300.0  # seconds a kept time may lie ahead of this clock (another host's)
CANNOT_KEEP = "cannot keep the VWO settings in %s (%s)"
CANNOT_READ = "the kept VWO settings in %s cannot be used (%s)"
TOO_OLD = "the VWO settings kept in %s are %.0f s old, older than %.0f s: not used"
STARTED_FROM = "the gateway did not answer: started from the VWO settings kept in %s, %.0f s old"
NOT_OURS = "kept for another VWO account or SDK key"
IN_THE_FUTURE = "kept_at is not a time up to now"


class SharedSettings(Protocol):
    """Where the fleet keeps settings (``gateway.redis_store.RedisStore``)."""

    def claim_settings_fetch(self, interval: float) -> bool: ...
    def kept_settings(self) -> bytes | str | None: ...  # a document ``keep`` wrote
    def keep_settings(self, document: str) -> None: ...


@dataclass(frozen=True)
class Kept:
    """Settings kept earlier: where (``state_dir``, ``redis``, ``bootstrap``) and when."""

    settings: dict[str, Any]
    source: str
    kept_at: float  # time.time()

    @property
    def age(self) -> float:
        return max(time.time() - self.kept_at, 0.0)


class SettingsKeeper:
    """Keeps each revision that loads, gives back the newest at a cold start, and with Redis
    shares one gateway fetch per interval among the fleet."""

    def __init__(self, config: Config, redis: SharedSettings | None = None) -> None:
        self._config = config
        self._redis = redis
        self._owner = Owner(str(config.account_id), str(config.sdk_key))
        self._file = settings_file(config.state_dir, self._owner) if config.state_dir else None
        self._kept_digest: str | None = None
        self.last_error: str | None = None  # the last kept source that could not be used

    def fetch(self, from_gateway: Callable[[], dict[str, Any]]) -> Kept:
        """The settings: with Redis, one worker per interval asks the gateway and keeps what it
        got, the others take that (source ``redis``; Redis down or empty: each asks for
        itself)."""
        redis = self._redis
        interval = self._config.settings_refresh_interval
        if redis is not None and not redis.claim_settings_fetch(interval):
            shared = self._from_redis()
            if shared is not None and shared.age < 2 * interval:
                return shared
        return Kept(from_gateway(), "gateway", time.time())

    def keep(self, loaded: Kept) -> None:
        """Keep settings that loaded: in the state directory, atomically, and (fetched from
        the gateway) in Redis. A revision kept already is not written again."""
        body = json.dumps(loaded.settings, sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
        if digest == self._kept_digest:
            return
        owner = json.dumps(self._owner.tag)
        document = f'{{"owner":{owner},"kept_at":{loaded.kept_at!r},"settings":{body}}}'
        if self._redis is not None and loaded.source == "gateway":
            self._redis.keep_settings(document)
        if self._file is not None:
            try:
                check_directory(str(self._file.parent))
                _write_atomically(self._file, document)
            except OSError as error:
                logger.error(CANNOT_KEEP, self._file.parent, error)
                return
        self._kept_digest = digest

    def newest(self) -> Kept | None:
        """The newest kept settings still young enough, or None. A source that cannot be
        used (unreadable, damaged, foreign, hostile) is logged and skipped."""
        found = [k for k in (self._from_file(), self._from_redis(), self._bootstrap()) if k]
        usable = []
        for kept in found:
            if kept.age > self._config.kept_settings_max_age:
                logger.warning(TOO_OLD, kept.source, kept.age, self._config.kept_settings_max_age)
            else:
                usable.append(kept)
        return max(usable, key=lambda kept: kept.kept_at, default=None)

    def _from_file(self) -> Kept | None:
        path = self._file
        if path is None or not os.path.lexists(path):
            return None
        return self._guarded(
            path, lambda: self._read(read_bounded(path, MAX_SETTINGS_BYTES), "state_dir")
        )

    def _from_redis(self) -> Kept | None:
        redis = self._redis
        if redis is None:
            return None
        return self._guarded("redis", lambda: self._from_document(redis.kept_settings()))

    def _from_document(self, document: bytes | str | None) -> Kept | None:
        if document is None:
            return None
        if len(document) > MAX_SETTINGS_BYTES:
            raise ValueError(TOO_LARGE % MAX_SETTINGS_BYTES)
        return self._read(document, "redis")

    def _bootstrap(self) -> Kept | None:
        path = self._config.bootstrap_settings
        if path is None:
            return None

        def read() -> Kept:
            settings = json.loads(read_bounded(path, MAX_SETTINGS_BYTES, follow=True))
            if not isinstance(settings, dict):
                raise ValueError("not a settings object")
            return Kept(settings, "bootstrap", _past_time(os.path.getmtime(path)))

        return self._guarded(path, read)

    def _guarded(self, where: object, read: Callable[[], Kept | None]) -> Kept | None:
        """``read()``, or None when it fails in any way (logged, and kept as ``last_error``):
        a hostile file can exhaust the parser (RecursionError), memory or the float range."""
        try:
            return read()
        except Exception as error:
            self.last_error = f"{where}: {type(error).__name__}: {error}"[:500]
            logger.error(CANNOT_READ, where, f"{type(error).__name__}: {error}"[:500])
            return None

    def _read(self, document: bytes | str, source: str) -> Kept:
        """Settings as ``keep`` wrote them (``{"owner", "kept_at", "settings"}``), if ours."""
        parsed = json.loads(document)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("settings"), dict):
            raise ValueError("not a kept settings document")
        if parsed.get("owner") != self._owner.tag:
            raise ValueError(NOT_OURS)
        return Kept(parsed["settings"], source, _past_time(parsed.get("kept_at")))


def settings_file(state_dir: str, owner: Owner) -> Path:
    """Where ``owner``'s settings are kept in ``state_dir``."""
    return Path(state_dir) / FILE_PATTERN.format(tag=owner.tag)


def _past_time(value: object) -> float:
    """A kept time: a finite number of seconds no later than now (give or take a host's
    clock): a forged future or infinite time would make settings look forever young."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(IN_THE_FUTURE)
    kept_at = float(value)  # a 401-digit integer: OverflowError, refused like the rest
    if not math.isfinite(kept_at) or kept_at > time.time() + CLOCK_SKEW:
        raise ValueError(IN_THE_FUTURE)
    return kept_at


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, sync it, rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
