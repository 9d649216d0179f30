"""A bounded, durable FIFO of encoded messages for when the bus is unreachable.

SQLite in WAL mode: a crash of the RSU process keeps what was spooled, and the next start
re-sends it first.  When full, the oldest entries are dropped and counted, so the newest
traffic (what the center needs most after an outage) survives.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pydantic import Field

from common.config import StrictModel


class SpoolConfig(StrictModel):
    path: str | None = Field(
        None,
        description="spool file; default $XDG_STATE_HOME/v2x-citybrain/spool-<rsu>-<camera>.sqlite",
    )
    max_messages: int = Field(500_000, ge=1, description="oldest messages are dropped beyond")
    retry_initial_s: float = Field(0.5, gt=0, description="first wait before re-trying the bus")
    retry_max_s: float = Field(10.0, gt=0, description="longest wait between re-tries")


def default_spool_path(rsu_id: str, camera_id: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "v2x-citybrain" / f"spool-{rsu_id}-{camera_id}.sqlite"


class Spool:
    def __init__(self, path: Path, max_messages: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_messages = max_messages
        self.dropped = 0
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, rsu_id TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self._depth = int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def __len__(self) -> int:
        return self._depth

    def push(self, items: list[tuple[str, bytes]]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO spool (rsu_id, payload) VALUES (?, ?)", items)
            self._depth += len(items)
            excess = self._depth - self.max_messages
            if excess > 0:
                self._db.execute(
                    "DELETE FROM spool WHERE id IN (SELECT id FROM spool ORDER BY id LIMIT ?)",
                    (excess,),
                )
                self._depth -= excess
                self.dropped += excess

    def peek(self, limit: int) -> list[tuple[int, str, bytes]]:
        rows = self._db.execute(
            "SELECT id, rsu_id, payload FROM spool ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(i), str(r), bytes(p)) for i, r, p in rows]

    def delete_through(self, last_id: int) -> None:
        cursor = self._db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
        self._depth -= cursor.rowcount

    def close(self) -> None:
        self._db.close()
