"""Time series of detectors, from the layouts traffic data comes in.

A :class:`SeriesSet` is a ``[T, N]`` float32 matrix, one row per time step at a fixed
interval and one column per detector, with NaN where a reading is missing.  Zeros count as
missing where the data says so (loop-detector speeds are never truly 0; counts can be).
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


class DataError(ValueError):
    pass


@dataclass
class SeriesSet:
    values: np.ndarray  # [T, N] float32, NaN = missing
    start_ms: int  # time of row 0, UTC epoch ms
    interval_s: int
    ids: list[str]
    # The local clock is UTC + this. Time of day, day of week and weekends follow the local
    # clock: a city's rush hour and weekend begin at its own midnight, not at UTC's.
    utc_offset_s: int = 0

    @property
    def times_ms(self) -> np.ndarray:
        return self.start_ms + np.arange(len(self.values), dtype=np.int64) * self.interval_s * 1000

    @property
    def local_ms(self) -> np.ndarray:
        """Each row's time on the local clock, as epoch ms (for calendar arithmetic only)."""
        return self.times_ms + self.utc_offset_s * 1000

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.values)

    def time_of_day(self) -> np.ndarray:
        """Slot of the day of each row (0 .. steps_per_day - 1)."""
        seconds = (self.local_ms // 1000) % 86_400
        return (seconds // self.interval_s).astype(np.int64)

    def day_of_week(self) -> np.ndarray:
        return day_of_week(self.local_ms)

    @property
    def steps_per_day(self) -> int:
        return 86_400 // self.interval_s


def day_of_week(times_ms: np.ndarray) -> np.ndarray:
    """Monday = 0 .. Sunday = 6, by the times' calendar day as the data gives them."""
    days = times_ms // 86_400_000
    return ((days + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday


def parse_time(text: str) -> int:
    """ISO 8601 (naive = UTC) to epoch ms."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def load_wide_csv(
    path: Path, start: str, interval_s: int, zero_is_missing: bool = True
) -> SeriesSet:
    """Rows are time steps, columns detectors; the first row holds the detector ids."""
    if interval_s <= 0 or 86_400 % interval_s:
        raise DataError(f"interval must divide a day, got {interval_s} s")
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if len(rows) < 2:
        raise DataError(f"{path} has no data rows")
    header = [h.strip() for h in rows[0]]  # detector ids (numbers, in METR-LA)
    values = np.full((len(rows) - 1, len(header)), np.nan, np.float32)
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(f"{path}:{i + 2}: {len(row)} columns, the header has {len(header)}")
        for j, cell in enumerate(row):
            cell = cell.strip()
            if cell and cell.lower() != "nan":
                try:
                    values[i, j] = float(cell)
                except ValueError:
                    raise DataError(f"{path}:{i + 2}: column {j + 1}: {cell!r}") from None
    if zero_is_missing:
        values[values == 0] = np.nan
    return SeriesSet(values, parse_time(start), interval_s, header)


def load_long(
    path: Path,
    interval_s: int | None = None,
    time_column: str = "timestamp",
    id_column: str = "detector",
    value_column: str | None = None,
) -> SeriesSet:
    """A long table (time, detector, value), from Parquet or CSV, onto a regular grid.

    Missing (time, detector) pairs become NaN.  ``interval_s`` defaults to the most common
    gap between consecutive times.  The value column defaults to the one numeric column
    that is neither time nor id (``total`` in the intersection counts).
    """
    columns = _read_table(path)
    for name in (time_column, id_column):
        if name not in columns:
            raise DataError(f"{path} has no column {name!r} (has {sorted(columns)})")
    if value_column is None:
        candidates = [c for c in columns if c not in (time_column, id_column)]
        numeric = [c for c in candidates if np.issubdtype(np.asarray(columns[c]).dtype, np.number)]
        if not numeric:
            raise DataError(f"{path}: no numeric value column; name one with value_column")
        value_column = "total" if "total" in numeric else numeric[-1]
    times = np.asarray(columns[time_column]).astype("datetime64[ms]").astype(np.int64)
    ids = np.asarray([_id_text(v) for v in columns[id_column]])
    vals = np.asarray(columns[value_column], np.float32)
    unique_times = np.unique(times)
    if interval_s is None:
        gaps = np.diff(unique_times)
        if not len(gaps):
            raise DataError(f"{path}: one time step only")
        values, counts = np.unique(gaps, return_counts=True)
        interval_s = int(values[np.argmax(counts)] // 1000)
    start = int(unique_times[0])
    rows = ((times - start) // (interval_s * 1000)).astype(np.int64)
    if np.any((times - start) % (interval_s * 1000)):
        raise DataError(f"{path}: times are not on a {interval_s} s grid")
    detector_ids = sorted(set(ids.tolist()), key=lambda s: (len(s), s))
    column_of = {d: j for j, d in enumerate(detector_ids)}
    grid = np.full((int(rows.max()) + 1, len(detector_ids)), np.nan, np.float32)
    grid[rows, [column_of[d] for d in ids]] = vals
    return SeriesSet(grid, start, interval_s, detector_ids)


def _id_text(value: object) -> str:
    """Detector ids as text: 1 and 1.0 (a CSV column read as numbers) are both "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_table(path: Path) -> dict[str, list]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                "reading Parquet needs the forecast extra: pip install 'v2x-citybrain[forecast]'"
            ) from None
        try:
            return pq.read_table(path).to_pydict()
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if not rows:
        raise DataError(f"{path} has no rows")
    out: dict[str, list] = {k: [r[k] for r in rows] for k in rows[0]}
    for key, column in out.items():
        with contextlib.suppress(ValueError):
            out[key] = [float(v) for v in column]
    return out


def load_history(store: object, bin_s: int, since_ms: int, until_ms: int) -> SeriesSet:
    """citybrain's own history: each lane's flow (veh/h) per bin, detector id
    ``rsu_id/camera_id/lane_id``; bins without a lane interval are missing."""
    flows: dict[str, dict[int, float]] = {}
    for rsu_id in store.rsus(since_ms):  # type: ignore[attr-defined]
        for b in store.bins(rsu_id, bin_s, since_ms, until_ms, limit=10_000_000):  # type: ignore[attr-defined]
            if b.flow_veh_h is not None:
                flows.setdefault(f"{b.rsu_id}/{b.camera_id}/{b.lane_id}", {})[b.bin_start_ms] = (
                    b.flow_veh_h
                )
    ids = sorted(flows)
    bin_ms = bin_s * 1000
    start = since_ms // bin_ms * bin_ms
    rows = max(1, -(-(until_ms - start) // bin_ms))
    values = np.full((rows, len(ids)), np.nan, np.float32)
    for j, detector in enumerate(ids):
        for bin_start, flow in flows[detector].items():
            row = (bin_start - start) // bin_ms
            if 0 <= row < rows:
                values[row, j] = flow
    return SeriesSet(values, start, bin_s, ids)
