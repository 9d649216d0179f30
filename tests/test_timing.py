from __future__ import annotations

import numpy as np
import pytest

from rsu.timing import StageTimer


def test_health_window_reports_recent_frames_and_the_summary_all_of_them() -> None:
    timer = StageTimer(window=10_000, recent_window=300)
    for ms in [50.0] * 400 + [5.0] * 300:
        timer.record("inference", ms)
        timer.record("decode", 99.0)  # decode is measured but not part of the frame total
        assert timer.end_frame() == ms
    assert StageTimer.percentiles(timer.recent) == {"p50_ms": 5.0, "p99_ms": 5.0}
    assert StageTimer.percentiles(timer.total)["p99_ms"] == 50.0
    assert timer.summary()["decode"]["p50_ms"] == 99.0


def test_percentiles_agree_with_numpy_for_any_sample_count() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 100, 299, 300):
        values = rng.exponential(10.0, n).tolist()
        got = StageTimer.percentiles(values)
        assert got["p50_ms"] == pytest.approx(float(np.percentile(values, 50)), rel=1e-12)
        assert got["p99_ms"] == pytest.approx(float(np.percentile(values, 99)), rel=1e-12)
