"""Durable history of per-lane aggregates, in 1-minute and 5-minute bins.

One interface, two stores: an embedded SQLite file (the default, one node) and PostgreSQL (the
scale-out deployment, many ingest workers).  The history is what the forecaster trains on.

Exactly once under at-least-once delivery: every lane interval an RSU reports is first
inserted into ``lane_intervals`` under its identity (rsu, camera, run, seq, lane) with
``ON CONFLICT DO NOTHING``.  Only the rows that were new are added into the bins, in the same
transaction, so a redelivered message changes nothing.

Bins hold sums, so that any mix of intervals adds up correctly: vehicles counted per class,
seconds observed, occupancy x seconds, speed x seconds (over the seconds that had a speed)
and the largest queue.  Derived figures (flow in veh/h, mean speed, occupancy) are computed
when read.  An interval belongs to the bin its start falls in; RSU intervals that divide a
minute (the default is 10 s) never straddle two bins.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.bus import redact_url
from common.schemas import VEHICLE_CLASSES, LaneAggregates, RoadUserClass

BIN_SIZES_S = (60, 300)
CLASSES = [c.value for c in RoadUserClass]
VEHICLES = sorted(c.value for c in VEHICLE_CLASSES)
COUNT_COLUMNS = [f"n_{c}" for c in CLASSES]


class HistoryError(RuntimeError):
    pass


@dataclass(frozen=True)
class LaneRow:
    """One lane of one ``lane_aggregates`` message."""

    rsu_id: str
    camera_id: str
    run_id: str
    seq: int
    lane_id: str
    approach: str | None
    interval_start_ms: int
    observed_s: float
    counts: dict[str, int]
    mean_speed_mps: float | None
    occupancy: float | None
    queue_vehicles: int | None
    queue_m: float | None


@dataclass(frozen=True)
class LaneBin:
    rsu_id: str
    camera_id: str
    lane_id: str
    approach: str | None
    bin_s: int
    bin_start_ms: int
    observed_s: float
    counts: dict[str, int]
    vehicles: int
    flow_veh_h: float | None
    mean_speed_mps: float | None
    occupancy: float | None
    queue_max_vehicles: int | None
    queue_max_m: float | None


def lane_rows(message: LaneAggregates) -> list[LaneRow]:
    return [
        LaneRow(
            rsu_id=message.rsu_id,
            camera_id=message.camera_id,
            run_id=message.run_id,
            seq=message.seq,
            lane_id=lane.lane_id,
            approach=lane.approach,
            interval_start_ms=message.interval_start_ms,
            observed_s=message.observed_s,
            counts={k.value: v for k, v in lane.counts.items()},
            mean_speed_mps=lane.mean_speed_mps,
            occupancy=lane.occupancy,
            queue_vehicles=lane.queue_vehicles,
            queue_m=lane.queue_m,
        )
        for lane in message.lanes
    ]


class HistoryStore(Protocol):
    def write(self, rows: Sequence[LaneRow]) -> int:
        """Adds the rows not seen before; returns how many were new."""
        ...

    def bins(
        self,
        rsu_id: str,
        bin_s: int,
        since_ms: int,
        until_ms: int,
        camera_id: str | None = None,
        lane_id: str | None = None,
        limit: int = 10_000,
    ) -> list[LaneBin]: ...

    def prune(self, before_ms: int) -> int:
        """Deletes raw intervals that started before ``before_ms`` (bins are kept)."""
        ...

    def rsus(self, since_ms: int) -> list[str]:
        """RSUs with bins that start at or after ``since_ms``."""
        ...

    def close(self) -> None: ...


_INTERVAL_COLUMNS = (
    "rsu_id, camera_id, run_id, seq, lane_id, approach, interval_start_ms, observed_s, "
    + ", ".join(COUNT_COLUMNS)
    + ", mean_speed_mps, occupancy, queue_vehicles, queue_m"
)
_BIN_SUMS = (
    "observed_s", *COUNT_COLUMNS, "speed_weighted", "speed_seconds", "occupancy_weighted",
)  # fmt: skip


def _schema(real: str, bigint: str) -> list[str]:
    counts = ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNT_COLUMNS)
    return [
        f"""CREATE TABLE IF NOT EXISTS lane_intervals (
            rsu_id TEXT NOT NULL, camera_id TEXT NOT NULL, run_id TEXT NOT NULL,
            seq {bigint} NOT NULL, lane_id TEXT NOT NULL, approach TEXT,
            interval_start_ms {bigint} NOT NULL, observed_s {real} NOT NULL, {counts},
            mean_speed_mps {real}, occupancy {real}, queue_vehicles INTEGER, queue_m {real},
            PRIMARY KEY (rsu_id, camera_id, run_id, seq, lane_id))""",
        """CREATE INDEX IF NOT EXISTS lane_intervals_start
            ON lane_intervals (interval_start_ms)""",
        f"""CREATE TABLE IF NOT EXISTS lane_bins (
            bin_s INTEGER NOT NULL, rsu_id TEXT NOT NULL, camera_id TEXT NOT NULL,
            lane_id TEXT NOT NULL, bin_start_ms {bigint} NOT NULL, approach TEXT,
            observed_s {real} NOT NULL, {counts},
            speed_weighted {real} NOT NULL DEFAULT 0, speed_seconds {real} NOT NULL DEFAULT 0,
            occupancy_weighted {real} NOT NULL DEFAULT 0,
            queue_max_vehicles INTEGER, queue_max_m {real},
            PRIMARY KEY (bin_s, rsu_id, bin_start_ms, camera_id, lane_id))""",
    ]


def _interval_values(row: LaneRow) -> tuple[Any, ...]:
    return (
        row.rsu_id, row.camera_id, row.run_id, row.seq, row.lane_id, row.approach,
        row.interval_start_ms, row.observed_s, *(row.counts.get(c, 0) for c in CLASSES),
        row.mean_speed_mps, row.occupancy, row.queue_vehicles, row.queue_m,
    )  # fmt: skip


def _bin_values(row: LaneRow, bin_s: int) -> tuple[Any, ...]:
    start = row.interval_start_ms // (bin_s * 1000) * (bin_s * 1000)
    has_speed = row.mean_speed_mps is not None
    return (
        bin_s, row.rsu_id, row.camera_id, row.lane_id, start, row.approach, row.observed_s,
        *(row.counts.get(c, 0) for c in CLASSES),
        (row.mean_speed_mps or 0.0) * row.observed_s if has_speed else 0.0,
        row.observed_s if has_speed else 0.0,
        (row.occupancy or 0.0) * row.observed_s,
        row.queue_vehicles, row.queue_m,
    )  # fmt: skip


def _to_bin(record: Sequence[Any]) -> LaneBin:
    (bin_s, rsu_id, camera_id, lane_id, start, approach, observed, *rest) = record
    counts_raw = rest[: len(CLASSES)]
    speed_weighted, speed_seconds, occupancy_weighted, queue_n, queue_m = rest[len(CLASSES) :]
    counts = {c: int(n) for c, n in zip(CLASSES, counts_raw, strict=True) if n}
    vehicles = sum(counts.get(c, 0) for c in VEHICLES)
    return LaneBin(
        rsu_id=rsu_id,
        camera_id=camera_id,
        lane_id=lane_id,
        approach=approach,
        bin_s=int(bin_s),
        bin_start_ms=int(start),
        observed_s=round(float(observed), 3),
        counts=counts,
        vehicles=vehicles,
        flow_veh_h=round(vehicles * 3600.0 / observed, 1) if observed > 0 else None,
        mean_speed_mps=round(speed_weighted / speed_seconds, 2) if speed_seconds > 0 else None,
        occupancy=round(occupancy_weighted / observed, 3) if observed > 0 else None,
        queue_max_vehicles=queue_n,
        queue_max_m=queue_m,
    )


class _SqlStore:
    """The SQL both stores share; subclasses say how to connect and how to spell things."""

    placeholder = "?"
    greatest = "MAX"  # SQLite's two-argument MAX; PostgreSQL: GREATEST

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _upsert(self) -> str:
        def greatest(a: str, b: str) -> str:
            # NULL means "no queue measured": keep the other side then.
            return f"COALESCE({self.greatest}({a}, {b}), {a}, {b})"

        return self._sql(
            "INSERT INTO lane_bins (bin_s, rsu_id, camera_id, lane_id, bin_start_ms, approach, "
            + ", ".join(_BIN_SUMS)
            + ", queue_max_vehicles, queue_max_m) VALUES ("
            + ", ".join(["?"] * (8 + len(_BIN_SUMS)))
            + ") ON CONFLICT (bin_s, rsu_id, bin_start_ms, camera_id, lane_id) DO UPDATE SET "
            + ", ".join(f"{c} = lane_bins.{c} + excluded.{c}" for c in _BIN_SUMS)
            + ", approach = COALESCE(excluded.approach, lane_bins.approach)"
            + ", queue_max_vehicles = "
            + greatest("lane_bins.queue_max_vehicles", "excluded.queue_max_vehicles")
            + ", queue_max_m = "
            + greatest("lane_bins.queue_max_m", "excluded.queue_max_m")
        )

    def _insert_interval(self) -> str:
        return self._sql(
            f"INSERT INTO lane_intervals ({_INTERVAL_COLUMNS}) VALUES ("
            + ", ".join(["?"] * (12 + len(CLASSES)))
            + ") ON CONFLICT DO NOTHING"
        )

    _errors: type[Exception] | tuple[type[Exception], ...]

    def _prepare(self) -> None:
        self._insert, self._upsert_sql = self._insert_interval(), self._upsert()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:  # a connection inside one transaction
        raise NotImplementedError
        yield

    def write(self, rows: Sequence[LaneRow]) -> int:
        """Adds the rows not seen before, in one transaction; returns how many were new."""
        new = 0
        try:
            with self._transaction() as db:
                for row in rows:
                    if db.execute(self._insert, _interval_values(row)).rowcount:
                        new += 1
                        for bin_s in BIN_SIZES_S:
                            db.execute(self._upsert_sql, _bin_values(row, bin_s))
        except self._errors as exc:
            raise HistoryError(f"history write failed: {exc}") from None
        return new

    def bins(
        self,
        rsu_id: str,
        bin_s: int,
        since_ms: int,
        until_ms: int,
        camera_id: str | None = None,
        lane_id: str | None = None,
        limit: int = 10_000,
    ) -> list[LaneBin]:
        _check_bin(bin_s)
        args: list[Any] = [bin_s, rsu_id, since_ms, until_ms]
        args += [camera_id] if camera_id else []
        args += [lane_id] if lane_id else []
        query = self._select_bins(bool(camera_id), bool(lane_id))
        try:
            with self._transaction() as db:
                records = db.execute(query, [*args, limit]).fetchall()
        except self._errors as exc:
            raise HistoryError(f"history read failed: {exc}") from None
        return [_to_bin(r) for r in records]

    def rsus(self, since_ms: int) -> list[str]:
        query = self._sql("SELECT DISTINCT rsu_id FROM lane_bins WHERE bin_start_ms >= ?")
        try:
            with self._transaction() as db:
                return sorted(r[0] for r in db.execute(query, (since_ms,)).fetchall())
        except self._errors as exc:
            raise HistoryError(f"history read failed: {exc}") from None

    def prune(self, before_ms: int) -> int:
        query = self._sql("DELETE FROM lane_intervals WHERE interval_start_ms < ?")
        with self._transaction() as db:
            return int(db.execute(query, (before_ms,)).rowcount)

    def _select_bins(self, camera: bool, lane: bool) -> str:
        where = "bin_s = ? AND rsu_id = ? AND bin_start_ms >= ? AND bin_start_ms < ?"
        where += " AND camera_id = ?" if camera else ""
        where += " AND lane_id = ?" if lane else ""
        return self._sql(
            "SELECT bin_s, rsu_id, camera_id, lane_id, bin_start_ms, approach, observed_s, "
            + ", ".join(COUNT_COLUMNS)
            + ", speed_weighted, speed_seconds, occupancy_weighted, queue_max_vehicles, "
            "queue_max_m FROM lane_bins WHERE "
            + where
            + " ORDER BY bin_start_ms, camera_id, lane_id LIMIT ?"
        )


def _check_bin(bin_s: int) -> None:
    if bin_s not in BIN_SIZES_S:
        raise HistoryError(f"bin_s must be one of {list(BIN_SIZES_S)}, got {bin_s}")


class SqliteHistory(_SqlStore):
    """The embedded default: one SQLite file (WAL), safe for one writer process at a time
    and any number of readers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _schema("REAL", "INTEGER"):
                self._db.execute(statement)
            self._db.commit()
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open history database {self.path}: {exc}") from None
        self._lock = threading.Lock()  # the API reads from a thread pool
        self._errors = sqlite3.Error
        self._prepare()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresHistory(_SqlStore):
    """PostgreSQL, for the scale-out deployment: any number of ingest workers write."""

    placeholder = "%s"
    greatest = "GREATEST"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise HistoryError(
                "PostgreSQL history needs the center extra: pip install 'v2x-citybrain[center]'"
            ) from None
        self._errors = psycopg.Error
        try:
            psycopg.connect(url, connect_timeout=5).close()  # fail fast, naming the cause
            self._pool = ConnectionPool(url, min_size=1, max_size=4, open=True, timeout=10.0)
            with self._pool.connection() as db:
                for statement in _schema("DOUBLE PRECISION", "BIGINT"):
                    db.execute(statement)
        except (psycopg.Error, Exception) as exc:  # the pool raises its own PoolTimeout
            raise HistoryError(f"cannot open PostgreSQL history {redact_url(url)}: {exc}") from None
        self._prepare()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._pool.connection() as db, db.transaction():
            yield db

    def close(self) -> None:
        self._pool.close()


def open_history(url: str) -> HistoryStore:
    """``sqlite:///path/to/file.db`` (or a bare path) or ``postgresql://user:pw@host/db``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresHistory(url)
    if url.startswith("sqlite:///"):
        return SqliteHistory(url[len("sqlite:///") :])  # sqlite:////abs/path: an absolute path
    if "://" in url:
        raise HistoryError(f"history url {url!r}: use sqlite:///FILE or postgresql://...")
    return SqliteHistory(url)


def rows_of(messages: Iterable[object]) -> list[LaneRow]:
    return [row for m in messages if isinstance(m, LaneAggregates) for row in lane_rows(m)]
