"""The evaluation protocol: chronological split, sliding windows, masked metrics.

- **Split:** rows in time order, 70% train, 10% validation, 20% test (7:1:2), never shuffled.
- **Windows:** ``n_in`` steps of history predict the next ``n_out`` (12 and 12 at 5 min: an
  hour ahead).  A test window's history may reach back into the validation rows, but its
  targets lie wholly inside the test rows.
- **Metrics:** masked, as in the DCRNN protocol: a target that is missing (NaN) counts for
  nothing, in the sum or in the count.  MAPE also leaves out targets below ``mape_floor``
  (a count of 0 vehicles has no percentage error).  Reported at the steps that are 15, 30
  and 60 minutes ahead, and averaged over all ``n_out`` steps (``mae_avg``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HORIZONS_MIN = (15, 30, 60)


@dataclass(frozen=True)
class Split:
    train_end: int  # rows [0, train_end) train
    val_end: int  # [train_end, val_end) validation; [val_end, T) test


def chronological_split(rows: int, ratios: tuple[int, int, int] = (7, 1, 2)) -> Split:
    total = sum(ratios)
    return Split(rows * ratios[0] // total, rows * (ratios[0] + ratios[1]) // total)


def window_starts(first_target: int, end: int, n_in: int, n_out: int) -> np.ndarray:
    """Row of the first target of every window whose targets are in [first_target, end) and
    whose history (n_in rows before) exists."""
    first = max(first_target, n_in)
    last = end - n_out
    return np.arange(first, last + 1, dtype=np.int64) if last >= first else np.zeros(0, np.int64)


def gather(values: np.ndarray, starts: np.ndarray, n_in: int, n_out: int):
    """History ``[W, n_in, N]`` and targets ``[W, n_out, N]`` of the windows."""
    hist = starts[:, None] + np.arange(-n_in, 0)[None, :]
    targ = starts[:, None] + np.arange(n_out)[None, :]
    return values[hist], values[targ]


def horizon_steps(interval_s: int, n_out: int) -> dict[int, int]:
    """Minutes ahead -> index in the forecast, for the horizons the interval can express."""
    out = {}
    for minutes in HORIZONS_MIN:
        step, remainder = divmod(minutes * 60, interval_s)
        if not remainder and 1 <= step <= n_out:
            out[minutes] = step - 1
    return out


def masked_metrics(
    prediction: np.ndarray, target: np.ndarray, interval_s: int, mape_floor: float = 1.0
) -> dict[str, float | None]:
    """MAE, RMSE, MAPE (%) at 15/30/60 min and MAE averaged over every step ahead."""
    valid = ~np.isnan(target) & ~np.isnan(prediction)
    error = np.where(valid, prediction - target, 0.0)
    out: dict[str, float | None] = {}

    def at(step_mask: np.ndarray, err: np.ndarray, tgt: np.ndarray) -> tuple:
        n = step_mask.sum()
        if not n:
            return None, None, None
        mae = float(np.abs(err).sum() / n)
        rmse = float(np.sqrt((err**2).sum() / n))
        pct = step_mask & (np.abs(np.nan_to_num(tgt)) >= mape_floor)
        mape = float((np.abs(err)[pct] / np.abs(tgt[pct])).mean() * 100) if pct.any() else None
        return mae, rmse, mape

    for minutes, step in horizon_steps(interval_s, target.shape[1]).items():
        mae, rmse, mape = at(valid[:, step], error[:, step], target[:, step])
        out[f"mae_{minutes}"] = _round(mae)
        out[f"rmse_{minutes}"] = _round(rmse)
        out[f"mape_{minutes}"] = _round(mape)
    mae, rmse, mape = at(valid, error, target)
    out["mae_avg"], out["rmse_avg"], out["mape_avg"] = _round(mae), _round(rmse), _round(mape)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
