"""Per-stage latency bookkeeping for the RSU pipeline."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("decode", "preprocess", "inference", "postprocess", "tracking", "analytics", "publish")


class StageTimer:
    """Keeps the last ``window`` samples of each stage and of the whole frame, in ms.

    ``recent`` holds the last ``recent_window`` frame totals: what health reports, cheap
    enough to summarise every second inside the pipeline. ``between_frames``: the garbage
    collections run after a frame was sent (common/gc_policy.py), outside every frame.
    """

    def __init__(self, window: int = 10_000, recent_window: int = 300) -> None:
        self.samples: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self.total: deque[float] = deque(maxlen=window)
        self.recent: deque[float] = deque(maxlen=recent_window)
        self.between_frames: deque[float] = deque(maxlen=window)
        self.last: dict[str, float] = {}  # stages of the last closed frame
        self._current: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._current[name] = (time.perf_counter() - start) * 1000.0

    def record(self, name: str, ms: float) -> None:
        self._current[name] = ms

    def frame_so_far_ms(self) -> float:
        return sum(v for k, v in self._current.items() if k != "decode")

    def end_frame(self) -> float:
        """Close the frame; returns its total, decoded frame -> published (decode excluded)."""
        current, self._current = self._current, {}
        self.last = current
        for name, value in current.items():
            self.samples[name].append(value)
        total = sum(v for k, v in current.items() if k != "decode")
        self.total.append(total)
        self.recent.append(total)
        return total

    @staticmethod
    def percentiles(values: deque[float] | list[float]) -> dict[str, float]:
        if not values:
            return {"p50_ms": 0.0, "p99_ms": 0.0}
        # Sorted once, interpolated as np.percentile does: two np.percentile calls cost
        # ~100 us, and health runs this inside the camera loop every second.
        ordered = sorted(values)
        return {"p50_ms": _interpolate(ordered, 50.0), "p99_ms": _interpolate(ordered, 99.0)}

    def summary(self) -> dict[str, dict[str, float]]:
        out = {name: self.percentiles(v) for name, v in self.samples.items() if v}
        out["pipeline"] = self.percentiles(self.total)
        return out


def _interpolate(ordered: list[float], q: float) -> float:
    """The q-th percentile of sorted values, by linear interpolation (numpy's default)."""
    position = q / 100.0 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
