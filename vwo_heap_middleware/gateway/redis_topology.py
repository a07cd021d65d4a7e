"""Which Redis, from ``VWO_HEAP_REDIS_URL``: one node, a cluster or Sentinel, over TLS or not,
with ACL credentials or not; blocking and asyncio clients of each. Only ``redis_store`` uses it:
nothing above knows which topology runs.

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path``: one node;
- ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://``): a Redis
  Cluster (or a managed service in cluster mode), from any of its nodes; the client follows
  ``MOVED``/``ASK`` while slots move;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/db]``
  (``rediss+sentinel://``): the master Sentinel names; after a failover the client asks the
  Sentinels again and finds the new one, with no restart.

TLS checks the server's certificate against ``Config.redis_ca_file`` (else the system's CAs);
``redis_cert_file``/``redis_key_file`` give a client certificate when the server asks for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ..config import Config

SINGLE, CLUSTER, SENTINEL = "single", "cluster", "sentinel"
SCHEMES = {
    "redis": (SINGLE, False),
    "rediss": (SINGLE, True),
    "unix": (SINGLE, False),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
}


def _invalid(url: str, why: str) -> ValueError:
    shown = _without_password(url)
    return ValueError(f"VWO_HEAP_REDIS_URL {shown!r}: {why}")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@dataclass(frozen=True)
class RedisTopology:
    """A parsed ``VWO_HEAP_REDIS_URL``; ``client()`` and ``client_on_loop()`` build clients."""

    kind: str
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    db: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # timeouts, credentials, TLS
    tls: bool = False

    @classmethod
    def of(cls, config: Config) -> RedisTopology:
        """The topology a ``Config`` names; ``ValueError`` saying what to fix."""
        url = str(config.redis_url)
        scheme = url.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise _invalid(url, f"the scheme must be one of {', '.join(SCHEMES)}")
        kind, tls = SCHEMES[scheme]
        timeout = config.redis_timeout
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if tls:
            options["ssl_ca_certs"] = config.redis_ca_file
            if config.redis_cert_file is not None:
                options |= {
                    "ssl_certfile": config.redis_cert_file,
                    "ssl_keyfile": config.redis_key_file,
                }
        if kind == SINGLE:  # the URL says TLS (rediss://) and carries the credentials
            return cls(kind, url, options=options, tls=tls)
        parts = urlsplit(url)
        if parts.username:
            options["username"] = unquote(parts.username)
        if parts.password is not None:
            options["password"] = unquote(parts.password)
        nodes = tuple(
            _node(url, hostport) for hostport in parts.netloc.rsplit("@", 1)[-1].split(",")
        )
        path = [piece for piece in parts.path.split("/") if piece]
        if kind == CLUSTER:
            if path:
                raise _invalid(url, "a cluster has no database or name: give host:port only")
            return cls(kind, url, nodes, options=options, tls=tls)
        if not path or len(path) > 2:
            raise _invalid(url, "name the master Sentinel watches: .../<master name>[/db]")
        if len(path) == 2 and not path[1].isdigit():
            raise _invalid(url, f"the database must be a number, got {path[1]!r}")
        db = int(path[1]) if len(path) == 2 else 0
        return cls(kind, url, nodes, path[0], db, options, tls)

    def describe(self) -> str:
        """For readiness and logs: the topology and where, never the password."""
        if self.kind == SINGLE:
            return _without_password(self.url)
        where = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"{self.kind} {where}" + (f" master {self.master}" if self.master else "")

    def client(self) -> Any:
        """A blocking client."""
        import redis
        import redis.cluster
        import redis.sentinel

        return self._client(redis.Redis, redis.cluster, redis.sentinel)

    def client_on_loop(self) -> Any:
        """An asyncio client, for the running event loop."""
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.sentinel

        return self._client(redis.asyncio.Redis, redis.asyncio.cluster, redis.asyncio.sentinel)

    def _client(self, single: Any, cluster: Any, sentinel: Any) -> Any:
        """A client from redis-py's blocking or asyncio classes (the same names in both)."""
        if self.kind == SINGLE:
            return single.from_url(self.url, **self.options)
        if self.kind == CLUSTER:
            startup = [cluster.ClusterNode(host, port) for host, port in self.nodes]
            return cluster.RedisCluster(startup_nodes=startup, ssl=self.tls, **self.options)
        watching = sentinel.Sentinel(
            list(self.nodes), sentinel_kwargs=self._sentinel(), **self.options
        )
        tls = {"connection_class": sentinel.SentinelManagedSSLConnection} if self.tls else {}
        return watching.master_for(str(self.master), db=self.db, **tls)

    def _sentinel(self) -> dict[str, Any]:
        """How to talk to the Sentinels themselves: the same timeouts and TLS; the ACL user is
        the data nodes' (Sentinels are usually open to the network they watch)."""
        kept = {k: v for k, v in self.options.items() if k not in ("username", "password")}
        return kept | {"ssl": True} if self.tls else kept


def _node(url: str, hostport: str) -> tuple[str, int]:
    host, _, port = hostport.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _invalid(url, f"each node must be host:port, got {hostport!r}")
    return host, int(port)
