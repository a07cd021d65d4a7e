"""Fixtures only; what tests share besides them is in ``tests/support.py``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import settings

from tests.redis_topologies import (
    Processes,
    RedisClusterServers,
    RedisSentinelServers,
    RedisTlsServer,
)
from tests.support import (
    DATA,
    DEMO_FLAGS,
    DEMO_SEGMENTS,
    REDIS_MISSING,
    SHOP,
    EngineFactory,
    RedisServer,
    TlsFiles,
    wait_until,
)
from vwo_heap_middleware.config import Config
from vwo_heap_middleware.engine import FlagEngine
from vwo_heap_middleware.testing.gateway import LocalGateway, compile_flags, load_flags_file

# Properties are about what input does, not how fast: no per-example deadline on a busy machine.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

pytest_plugins = ["pytester"]  # the test kit's own pytest plugin is tested in a subprocess
collect_ignore = ["user_project", "django_project"]  # users' projects: run from a wheel


@pytest.fixture
def demo_gateway() -> Iterator[LocalGateway]:
    with LocalGateway.from_files(flags_file=DEMO_FLAGS, segments_file=DEMO_SEGMENTS) as gateway:
        yield gateway


@pytest.fixture
def raw_gateway() -> Iterator[LocalGateway]:
    """Raw VWO settings (not a flags file) and CSV segments."""
    with LocalGateway.from_files(
        settings_file=DATA / "raw_settings.json", segments_file=DATA / "segments.csv"
    ) as gateway:
        yield gateway


@pytest.fixture
def shop_gateway() -> Iterator[LocalGateway]:
    with LocalGateway(compile_flags(SHOP), {"vip": ["vip@example.com"]}) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    return files


@pytest.fixture(scope="session")
def demo_settings() -> dict[str, object]:
    return load_flags_file(DEMO_FLAGS)


ANSWER_TIMEOUT = 10.0


@pytest.fixture
def make_engine() -> Iterator[EngineFactory]:
    """Build started engines on a gateway; each is closed after the test."""
    engines: list[FlagEngine] = []

    def make(gateway: LocalGateway, *, ready: bool = True, **kwargs: Any) -> FlagEngine:
        # A test that needs an answer never races a production timeout (0.1 s lookups: a
        # busy machine misses it); a test of a timeout names the timeouts it measures.
        kwargs.setdefault("lookup_timeout", ANSWER_TIMEOUT)
        kwargs.setdefault("evaluation_timeout", ANSWER_TIMEOUT)
        settings = json.loads(gateway.app.settings_body)
        kwargs.setdefault("account_id", str(settings["accountId"]))
        kwargs.setdefault("sdk_key", settings.get("sdkKey", "any-key"))
        config = Config(gateway_url=gateway.url, **kwargs)
        engine = FlagEngine(config)
        engines.append(engine)
        engine.start()
        if ready:
            wait_until(lambda: engine.ready, what="engine ready")
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(REDIS_MISSING)
    server = RedisServer(binary, tmp_path)
    server.start()
    yield server
    server.stop()


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(REDIS_MISSING)
    return binary


def _started(servers: Processes) -> Iterator[Any]:
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    yield from _started(RedisClusterServers(_redis_binary(), tmp_path))


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[RedisSentinelServers]:
    yield from _started(RedisSentinelServers(_redis_binary(), tmp_path))


@pytest.fixture
def redis_tls(tmp_path: Path, tls_files: TlsFiles) -> Iterator[RedisTlsServer]:
    yield from _started(RedisTlsServer(_redis_binary(), tmp_path, tls_files))
