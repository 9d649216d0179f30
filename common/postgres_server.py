"""Starting a throwaway PostgreSQL server, for tests and benchmarks.

``$POSTGRES_URL`` names an existing server.  Otherwise ``initdb`` and ``pg_ctl`` are looked
for on PATH and in ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package).  The
server listens on 127.0.0.1 only, on a free port, with its data in a temporary directory, and
is stopped by its PID.  PostgreSQL refuses to run as root: as root, it runs as the
``postgres`` user (which Debian's package creates).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common.redis_server import free_port


class PostgresUnavailableError(RuntimeError):
    pass


def find_postgres_bin() -> Path:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    raise PostgresUnavailableError(
        "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package "
        "or set POSTGRES_URL"
    )


class LocalPostgresServer:
    """A PostgreSQL server this object owns; use as a context manager.  ``url`` connects as
    the superuser to database ``postgres`` over TCP (trust auth, loopback only)."""

    def __init__(self, port: int | None = None) -> None:
        self.bin = find_postgres_bin()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="v2x-pg-"))
        self.data_dir = self.root / "data"
        self.pid: int | None = None
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailableError(
                    "running as root and there is no 'postgres' user to run the server as"
                ) from None

    @property
    def url(self) -> str:
        user = self._user.pw_name if self._user else pwd.getpwuid(os.geteuid()).pw_name
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> LocalPostgresServer:
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        init = self._run(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        if init.returncode:
            raise PostgresUnavailableError(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c full_page_writes=off"
        )
        started = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-o", options, "-w", "-t", "60",
            "-l", str(self.root / "server.log"), "start",
        )  # fmt: skip
        if started.returncode:
            log = (self.root / "server.log").read_text(errors="replace")[-800:]
            raise PostgresUnavailableError(f"pg_ctl start failed: {started.stderr} {log}")
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return self

    def stop(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)  # fast shutdown
                for _ in range(100):
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgresServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
