"""Last-known-good settings: every revision that loads is kept (``Config.state_dir``, written
atomically; with Redis, under the account's prefix), so a process whose first fetch fails
starts from the newest kept revision at once rather than deciding nothing. A bootstrap file
(``Config.bootstrap_settings``) is the floor when nothing was kept. Settings older than
``Config.kept_settings_max_age`` are not used (and that is logged).

With Redis, one worker of the fleet fetches per refresh interval (under a lock) and the others
read the revision it kept: the gateway sees settings requests per interval, not per worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Config

logger = logging.getLogger("vwo_heap_middleware")

FILE_NAME = "settings.json"
CANNOT_KEEP = "cannot keep the VWO settings in %s (%s)"
CANNOT_READ = "the kept VWO settings in %s cannot be used (%s)"
TOO_OLD = "the VWO settings kept in %s are %.0f s old, older than %.0f s: not used"
STARTED_FROM = "the gateway did not answer: started from the VWO settings kept in %s, %.0f s old"


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
        self._file = Path(config.state_dir) / FILE_NAME if config.state_dir else None
        self._kept_digest: str | None = None

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
        document = f'{{"kept_at":{loaded.kept_at!r},"settings":{body}}}'
        if self._redis is not None and loaded.source == "gateway":
            self._redis.keep_settings(document)
        if self._file is not None:
            try:
                _write_atomically(self._file, document)
            except OSError as error:
                logger.error(CANNOT_KEEP, self._file.parent, error)
                return
        self._kept_digest = digest

    def newest(self) -> Kept | None:
        """The newest kept settings still young enough, or None."""
        found = [k for k in (self._from_file(), self._from_redis(), self._bootstrap()) if k]
        usable = []
        for kept in found:
            if kept.age > self._config.kept_settings_max_age:
                logger.warning(TOO_OLD, kept.source, kept.age, self._config.kept_settings_max_age)
            else:
                usable.append(kept)
        return max(usable, key=lambda kept: kept.kept_at, default=None)

    def _from_file(self) -> Kept | None:
        if self._file is None or not self._file.exists():
            return None
        try:
            return _read(self._file.read_text(encoding="utf-8"), "state_dir")
        except (OSError, ValueError, TypeError, KeyError) as error:
            logger.error(CANNOT_READ, self._file, error)
            return None

    def _from_redis(self) -> Kept | None:
        document = self._redis.kept_settings() if self._redis is not None else None
        if document is None:
            return None
        try:
            return _read(document, "redis")
        except (ValueError, TypeError, KeyError) as error:
            logger.error(CANNOT_READ, "redis", error)
            return None

    def _bootstrap(self) -> Kept | None:
        path = self._config.bootstrap_settings
        if path is None:
            return None
        try:
            settings = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(settings, dict):
                raise ValueError("not a settings object")
            return Kept(settings, "bootstrap", os.path.getmtime(path))
        except (OSError, ValueError) as error:
            logger.error(CANNOT_READ, path, error)
            return None


def _read(document: bytes | str, source: str) -> Kept:
    """Settings as ``SettingsKeeper.keep`` wrote them (``{"kept_at": ..., "settings": ...}``)."""
    parsed = json.loads(document)
    return Kept(dict(parsed["settings"]), source, float(parsed["kept_at"]))


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
