"""Redis as fleets run it, started by the tests from Debian's redis-server: a 3-master cluster
(``redis-cli --cluster create``), a master and replica watched by a Sentinel, and a node that
speaks only TLS (a test CA) to an ACL user."""

from __future__ import annotations

import functools
import socket
import ssl
import subprocess
from pathlib import Path

from tests.support import TlsFiles, free_port, wait_until


def _spawn(binary: str, directory: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, *args, "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _command(port: int, *words: str, tls: ssl.SSLContext | None = None) -> bytes:
    """One inline command's answer, b"" when the port does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            if tls is None:
                raw.sendall(" ".join(words).encode() + b"\r\n")
                return raw.recv(65536)
            with tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.recv(65536)
    except OSError:
        return b""


def _answers(port: int, command: str, expected: bytes) -> bool:
    return expected in _command(port, *command.split())


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class Processes:
    """Redis processes by port, that a test starts, kills one of, and stops."""

    def __init__(self) -> None:
        self.running: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        raise NotImplementedError

    def kill(self, port: int) -> None:
        process = self.running.pop(port)
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for port in list(self.running):
            self.kill(port)


class RedisClusterServers(Processes):
    """Three masters (no replicas), joined into one cluster."""

    def __init__(self, binary: str, directory: Path, masters: int = 3) -> None:
        super().__init__()
        self.binary, self.directory = binary, directory
        self.ports = [cluster_port() for _ in range(masters)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> None:
        for port in self.ports:
            self.running[port] = _spawn(
                self.binary,
                self.directory,
                *("--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"),
                *("--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000"),
            )
        for port in self.ports:
            wait_until(functools.partial(_answers, port, "PING", b"+PONG"), what="a cluster node")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            wait_until(
                functools.partial(_answers, port, "CLUSTER INFO", b"cluster_state:ok"),
                timeout=20,
                what="the cluster to be ok",
            )

    def reshard(self, slots: int, source: int, target: int) -> subprocess.CompletedProcess[str]:
        """Move ``slots`` slots from the node on port ``source`` to the one on ``target``."""
        ids = {
            port: _command(port, "CLUSTER", "MYID").split(b"\r\n")[1].decode()
            for port in (source, target)
        }
        return subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{self.ports[0]}",
                *("--cluster-from", ids[source], "--cluster-to", ids[target]),
                *("--cluster-slots", str(slots), "--cluster-yes"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


class RedisSentinelServers(Processes):
    """A master, its replica, and one Sentinel watching them (quorum 1, 1 s to call it down)."""

    MASTER = "shop-redis"

    def __init__(self, binary: str, directory: Path) -> None:
        super().__init__()
        self.binary, self.directory = binary, directory
        self.master, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel}/{self.MASTER}/0"

    def start(self) -> None:
        self.running[self.master] = _spawn(self.binary, self.directory, "--port", str(self.master))
        self.running[self.replica] = _spawn(
            self.binary,
            self.directory,
            *("--port", str(self.replica), "--replicaof", "127.0.0.1", str(self.master)),
        )
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
            f"sentinel failover-timeout {self.MASTER} 5000\n",
            encoding="utf-8",
        )
        self.running[self.sentinel] = subprocess.Popen(
            [self.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: b"master_link_status:up" in _command(self.replica, "INFO", "replication"),
            timeout=20,
            what="the replica to follow the master",
        )
        wait_until(lambda: self.master_port() == self.master, timeout=20, what="the Sentinel")

    def knows_the_replica(self) -> None:
        """Wait until a failover can happen: the Sentinel finds replicas in the master's INFO,
        every 10 s."""
        wait_until(
            lambda: (
                str(self.replica).encode()
                in _command(self.sentinel, "SENTINEL", "replicas", self.MASTER)
            ),
            timeout=30,
            what="the Sentinel to know the replica",
        )

    def master_port(self) -> int | None:
        """The master's port, as the Sentinel says it."""
        said = _command(self.sentinel, "SENTINEL", "get-master-addr-by-name", self.MASTER)
        lines = said.split(b"\r\n")
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None


class RedisTlsServer(Processes):
    """A node that speaks only TLS (certificate from the test CA) to one ACL user."""

    USER, PASSWORD = "shop", "s3cret-0451"

    def __init__(self, binary: str, directory: Path, tls: TlsFiles) -> None:
        super().__init__()
        self.binary, self.directory, self.tls = binary, directory, tls
        self.client_certificates = False  # True: clients must show one the test CA signed
        self.port = free_port()
        self.url = f"rediss://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        users = self.directory / "users.acl"
        users.write_text(f"user {self.USER} on >{self.PASSWORD} ~* &* +@all\nuser default off\n")
        self.running[self.port] = _spawn(
            self.binary,
            self.directory,
            *("--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)),
            *("--tls-ca-cert-file", str(self.tls.ca)),
            *("--tls-auth-clients", "yes" if self.client_certificates else "no"),
            *("--aclfile", str(users)),
        )
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        if self.client_certificates:
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        wait_until(
            lambda: _command(self.port, "PING", tls=context).startswith(b"-NOAUTH"),
            what="the TLS node",
        )
