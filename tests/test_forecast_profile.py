"""Daily profiles: weekdays apart from weekends, and a training row never sees its own day."""

from __future__ import annotations

import numpy as np
import pytest

from citybrain.forecast.data import SeriesSet
from citybrain.forecast.profile import DayProfiles, day_kind

DAY_MS = 86_400_000
THURSDAY = 1_330_560_000_000  # 2012-03-01 00:00 UTC
INTERVAL_S = 6 * 3600  # 4 slots a day keep the arithmetic readable


def times(first_ms: int, rows: int) -> np.ndarray:
    return first_ms + np.arange(rows, dtype=np.int64) * INTERVAL_S * 1000


def test_day_kind_splits_weekends_from_weekdays() -> None:
    days = THURSDAY + np.arange(7, dtype=np.int64) * DAY_MS  # Thursday .. Wednesday
    assert day_kind(days).tolist() == [0, 0, 1, 1, 0, 0, 0]


def test_a_training_row_leaves_its_own_day_out() -> None:
    # Thursday and Friday, 4 slots each, one detector: Thursday 0..3, Friday 10..13.
    fit_times = times(THURSDAY, 8)
    norm = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])
    profiles = DayProfiles.fit(fit_times, norm, INTERVAL_S)

    inside = profiles.at(fit_times, norm)
    # Each training row sees only the other weekday at its slot.
    assert inside[:, 0].tolist() == [10.0, 11.0, 12.0, 13.0, 0.0, 1.0, 2.0, 3.0]

    # A later weekday (next Monday) sees the mean of both; no reading is needed.
    monday = times(THURSDAY + 4 * DAY_MS, 4)
    assert profiles.at(monday)[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0]
    # A reading given for a row outside the fitted range does not change its profile.
    assert profiles.at(monday, np.full((4, 1), 99.0))[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0]


def test_weekends_use_weekend_days_and_fall_back_to_every_day() -> None:
    # Thursday to Saturday: weekdays read 1, Saturday reads 5.
    fit_times = times(THURSDAY, 12)
    norm = np.array([[1.0]] * 8 + [[5.0]] * 4)
    profiles = DayProfiles.fit(fit_times, norm, INTERVAL_S)
    sunday = times(THURSDAY + 3 * DAY_MS, 4)
    assert profiles.at(sunday)[:, 0].tolist() == [5.0] * 4
    # Saturday itself: no other weekend day, so every other day at that time.
    saturday = profiles.at(fit_times[8:], norm[8:])
    assert saturday[:, 0].tolist() == [1.0] * 4


def test_missing_readings_do_not_count_and_nothing_known_is_the_mean() -> None:
    fit_times = times(THURSDAY, 8)
    norm = np.array([[2.0, np.nan]] * 4 + [[np.nan, np.nan]] * 4)
    profiles = DayProfiles.fit(fit_times, norm, INTERVAL_S)
    monday = profiles.at(times(THURSDAY + 4 * DAY_MS, 4))
    assert monday[:, 0].tolist() == [2.0] * 4  # Friday's gaps left out, not read as 0
    assert monday[:, 1].tolist() == [0.0] * 4  # never seen: 0, the detector's mean
    assert np.isfinite(profiles.at(fit_times, norm)).all()


def test_state_round_trip() -> None:
    fit_times = times(THURSDAY, 8)
    norm = np.arange(16, dtype=np.float64).reshape(8, 2)
    profiles = DayProfiles.fit(fit_times, norm, INTERVAL_S)
    again = DayProfiles.from_state(profiles.state())
    later = times(THURSDAY + 7 * DAY_MS, 4)
    assert again.at(later) == pytest.approx(profiles.at(later))
    assert again.at(fit_times, norm) == pytest.approx(profiles.at(fit_times, norm))


def test_the_local_clock_decides_the_weekend_and_the_slot() -> None:
    # Friday 20:00 UTC is already Saturday 04:00 in Beijing (UTC+8).
    friday_evening = np.array([THURSDAY + DAY_MS + 20 * 3600_000], dtype=np.int64)
    norm = np.array([[7.0]])
    utc = DayProfiles.fit(friday_evening, norm, INTERVAL_S)
    beijing = DayProfiles.fit(friday_evening, norm, INTERVAL_S, utc_offset_s=8 * 3600)
    assert utc.counts[0].sum() == 1 and utc.counts[1].sum() == 0  # a weekday, slot 3
    assert utc.counts[0, 3, 0] == 1
    assert beijing.counts[1].sum() == 1 and beijing.counts[1, 0, 0] == 1  # Saturday, slot 0
    assert DayProfiles.from_state(beijing.state()).utc_offset_s == 8 * 3600

    series = SeriesSet(norm.astype(np.float32), int(friday_evening[0]), INTERVAL_S, ["a"], 28_800)
    assert series.time_of_day().tolist() == [0]
    assert series.day_of_week().tolist() == [5]  # Saturday
