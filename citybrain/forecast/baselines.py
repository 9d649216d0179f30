"""Baselines every model is compared with, in the same run.

- **last value:** the last reading of the history window, for every step ahead (the last
  one that is not missing; the detector's training mean when the window has none).
- **historical average:** per detector, the mean of the training rows at the same time of
  day (and, with ``by_weekday``, the same day of the week), falling back to the time of day
  and then to the detector's mean where a slot has no readings.
"""

from __future__ import annotations

import warnings

import numpy as np

from citybrain.forecast.data import SeriesSet


def last_value(history: np.ndarray, fallback: np.ndarray, n_out: int) -> np.ndarray:
    """``history [W, n_in, N]`` -> ``[W, n_out, N]``."""
    valid = ~np.isnan(history)
    # Index of the last valid step per window and detector (-1 when none).
    idx = np.where(valid, np.arange(history.shape[1])[None, :, None], -1).max(axis=1)
    last = np.take_along_axis(history, np.maximum(idx, 0)[:, None, :], axis=1)[:, 0, :]
    last = np.where(idx >= 0, last, fallback[None, :])
    return np.repeat(last[:, None, :], n_out, axis=1)


class HistoricalAverage:
    def __init__(self, series: SeriesSet, train_end: int, by_weekday: bool = False) -> None:
        values = series.values[:train_end]
        tod = series.time_of_day()[:train_end]
        slots = series.steps_per_day
        keys = tod + (series.day_of_week()[:train_end] * slots if by_weekday else 0)
        size = slots * (7 if by_weekday else 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slots are expected
            self.detector_mean = np.nanmean(values, axis=0)
            self.by_tod = _slot_means(values, tod, slots)
            table = _slot_means(values, keys, size) if by_weekday else self.by_tod
        self.table = table
        self.by_weekday = by_weekday
        self.slots = slots
        self.series = series

    def predict(self, target_rows: np.ndarray) -> np.ndarray:
        """``target_rows [W, n_out]`` (row numbers) -> ``[W, n_out, N]``."""
        tod = self.series.time_of_day()[target_rows]
        key = tod + (self.series.day_of_week()[target_rows] * self.slots if self.by_weekday else 0)
        out = self.table[key]
        out = np.where(np.isnan(out), self.by_tod[tod], out)
        return np.where(np.isnan(out), self.detector_mean, out)


def _slot_means(values: np.ndarray, keys: np.ndarray, size: int) -> np.ndarray:
    valid = ~np.isnan(values)
    sums = np.zeros((size, values.shape[1]))
    counts = np.zeros((size, values.shape[1]))
    np.add.at(sums, keys, np.where(valid, values, 0.0))
    np.add.at(counts, keys, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)
