"""Each detector's daily profile: its mean reading at each time of day, weekdays apart from
weekends, learnt from the training rows.

The forecaster reads it as two inputs per step: the profile now, and the profile ``n_out``
steps later. Over a window's ``n_in`` steps the second one spells out the profile of every
step the model has to forecast, so it knows that this detector usually slows down in
the weekday rush at 7 am. Without it, the Los-loop model forecast a Monday's rush 8.5 mph too
fast at 60 minutes (BENCHMARKS.md).

A training row never sees itself: its profile leaves out its own day (its own reading is
subtracted from the sums). Otherwise, with only a few days per day type, the profile would
hold the very value the model is asked to forecast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from citybrain.forecast.data import day_of_week

WEEKEND_FROM = 5  # Monday = 0, so Saturday and Sunday are the weekend


def day_kind(times_ms: np.ndarray) -> np.ndarray:
    """0 on weekdays, 1 at weekends."""
    return (day_of_week(times_ms) >= WEEKEND_FROM).astype(np.int64)


@dataclass(frozen=True)
class DayProfiles:
    """Sums and counts of the normalised readings per (day kind, slot of the day, detector)
    over the rows ``[start_ms, end_ms)`` they were learnt from. Days and slots follow the
    local clock, UTC + ``utc_offset_s``."""

    interval_s: int
    start_ms: int
    end_ms: int
    sums: np.ndarray  # [2, slots, N] float64
    counts: np.ndarray  # [2, slots, N] float64
    utc_offset_s: int = 0

    @classmethod
    def fit(
        cls, times_ms: np.ndarray, norm: np.ndarray, interval_s: int, utc_offset_s: int = 0
    ) -> DayProfiles:
        """``norm``: the normalised readings ``[T, N]`` (NaN = missing) at ``times_ms``."""
        slots = 86_400 // interval_s
        kind, slot = _kind_and_slot(times_ms + utc_offset_s * 1000, interval_s)
        sums = np.zeros((2, slots, norm.shape[1]))
        counts = np.zeros((2, slots, norm.shape[1]))
        seen = ~np.isnan(norm)
        np.add.at(sums, (kind, slot), np.where(seen, norm, 0.0))
        np.add.at(counts, (kind, slot), seen)
        end = int(times_ms[-1]) + interval_s * 1000 if len(times_ms) else 0
        start = int(times_ms[0]) if len(times_ms) else 0
        return cls(interval_s, start, end, sums, counts, utc_offset_s)

    def at(self, times_ms: np.ndarray, norm: np.ndarray | None = None) -> np.ndarray:
        """The profile ``[R, N]`` at ``times_ms`` (normalised units; 0, the detector's mean,
        where nothing is known). ``norm``: the readings at those times, where known, so a
        row inside the fitted range leaves its own day out."""
        n = self.sums.shape[2]
        kind, slot = _kind_and_slot(times_ms + self.utc_offset_s * 1000, self.interval_s)
        own = np.zeros((len(times_ms), n))
        own_count = np.zeros((len(times_ms), n))
        if norm is not None:
            inside = (times_ms >= self.start_ms) & (times_ms < self.end_ms)
            known = inside[:, None] & ~np.isnan(norm)
            own = np.where(known, norm, 0.0)
            own_count = known.astype(np.float64)
        sums = self.sums[kind, slot] - own
        counts = self.counts[kind, slot] - own_count
        # No other day of this kind at this time: every other day at this time instead.
        all_sums = self.sums[:, slot].sum(axis=0) - own
        all_counts = self.counts[:, slot].sum(axis=0) - own_count
        use_all = counts < 0.5
        sums = np.where(use_all, all_sums, sums)
        counts = np.where(use_all, all_counts, counts)
        profile = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0.5)
        return profile.astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "sums": self.sums.tolist(),
            "counts": self.counts.tolist(),
            "utc_offset_s": self.utc_offset_s,
        }

    def write_arrays(self, path: Path) -> dict[str, Any]:
        """The sums and counts to ``path`` (compressed .npz: for 1,000 detectors at 5-minute
        bins JSON took about 20 MB); returns the rest of the state, naming the file."""
        np.savez_compressed(path, sums=self.sums, counts=self.counts)
        state = self.state()
        del state["sums"], state["counts"]
        return state | {"arrays": path.name}

    @classmethod
    def read_arrays(cls, state: dict[str, Any], folder: Path) -> DayProfiles:
        """The inverse of :meth:`write_arrays`: ``state`` as it returned, the file in
        ``folder``."""
        with np.load(folder / state["arrays"]) as arrays:
            return cls.from_state(state | {"sums": arrays["sums"], "counts": arrays["counts"]})

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DayProfiles:
        return cls(
            int(state["interval_s"]),
            int(state["start_ms"]),
            int(state["end_ms"]),
            np.asarray(state["sums"], np.float64),
            np.asarray(state["counts"], np.float64),
            int(state.get("utc_offset_s", 0)),
        )


def _kind_and_slot(local_ms: np.ndarray, interval_s: int) -> tuple[np.ndarray, np.ndarray]:
    return day_kind(local_ms), (local_ms // 1000 % 86_400 // interval_s).astype(np.int64)
