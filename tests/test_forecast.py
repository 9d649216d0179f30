"""Forecasting: loaders, the masked metrics on hand-made answers, baselines, and a model that
must beat them on a series with a daily pattern, through the CLI, with its ONNX export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from citybrain.forecast.baselines import HistoricalAverage, last_value
from citybrain.forecast.data import DataError, SeriesSet, load_long, load_wide_csv
from citybrain.forecast.protocol import (
    chronological_split,
    gather,
    horizon_steps,
    masked_metrics,
    window_starts,
)
from common.datadir import resolve_asset

ROOT = Path(__file__).resolve().parent.parent


def test_wide_csv_zeros_are_missing_and_errors_name_the_line(tmp_path: Path) -> None:
    good = tmp_path / "wide.csv"
    good.write_text("101,102\n60.5,0\n61,59\n")
    series = load_wide_csv(good, "2012-03-01T00:00", 300)
    assert series.ids == ["101", "102"] and series.values.shape == (2, 2)
    assert np.isnan(series.values[0, 1]) and series.values[1, 1] == 59
    assert series.day_of_week()[0] == 3 and series.time_of_day().tolist() == [0, 1]  # a Thursday
    bad = tmp_path / "bad.csv"
    bad.write_text("101,102\n60,x\n")
    with pytest.raises(DataError, match=r"bad.csv:2: column 2: 'x'"):
        load_wide_csv(bad, "2012-03-01T00:00", 300)
    with pytest.raises(DataError, match="interval must divide a day"):
        load_wide_csv(good, "2012-03-01T00:00", 7)


def test_long_tables_go_onto_a_grid_with_gaps_missing(tmp_path: Path) -> None:
    table = tmp_path / "long.csv"
    table.write_text(
        "timestamp,detector,total\n"
        "2024-04-18T00:00,1,5\n2024-04-18T00:00,2,7\n2024-04-18T00:15,1,6\n"
        "2024-04-18T00:45,2,9\n"
    )
    series = load_long(table)
    assert series.interval_s == 900 and series.ids == ["1", "2"]
    assert series.values.shape == (4, 2)
    assert np.isnan(series.values[1, 1]) and np.isnan(series.values[2]).all()
    real = load_long(resolve_asset("flow/intersection_counts/counts_15min.parquet"))
    assert real.values.shape == (2496, 22) and real.interval_s == 900


def test_masked_metrics_on_known_answers() -> None:
    target = np.array([[[10.0], [np.nan], [20.0], [0.0]]])  # 1 window, 4 steps, 1 detector
    prediction = np.array([[[12.0], [99.0], [15.0], [1.0]]])
    metrics = masked_metrics(prediction, target, interval_s=900)  # steps are 15 min apart
    assert horizon_steps(900, 4) == {15: 0, 30: 1, 60: 3}
    assert metrics["mae_15"] == 2.0 and metrics["mape_15"] == 20.0
    assert metrics["mae_30"] is None  # the only target there is missing
    assert metrics["mae_60"] == 1.0 and metrics["mape_60"] is None  # 0 has no % error
    assert metrics["mae_avg"] == pytest.approx((2 + 5 + 1) / 3, abs=1e-4)
    assert metrics["rmse_avg"] == pytest.approx(np.sqrt((4 + 25 + 1) / 3), abs=1e-4)
    assert metrics["mape_avg"] == pytest.approx((20 + 25) / 2)


def test_split_windows_and_baselines() -> None:
    split = chronological_split(1000)
    assert (split.train_end, split.val_end) == (700, 800)
    starts = window_starts(800, 1000, 12, 12)
    assert starts[0] == 800 and starts[-1] == 988
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    values[17, 0] = np.nan
    history, target = gather(values, np.array([18]), 3, 2)
    assert history.shape == (1, 3, 2) and target[0, 0, 0] == 36
    last = last_value(history, np.zeros(2), 2)
    assert last[0, :, 0].tolist() == [32.0, 32.0]  # row 17 missing: row 16's reading
    # A pure daily pattern: the historical average by time of day is exact.
    steps = 96 * 10
    tod = np.arange(steps) % 96
    daily = (np.sin(tod / 96 * 2 * np.pi) * 10 + 20).astype(np.float32)[:, None]
    series = SeriesSet(daily, 0, 900, ["a"])
    average = HistoricalAverage(series, 700)
    rows = np.arange(800, 812)[None, :]
    assert np.allclose(average.predict(rows)[0, :, 0], daily[800:812, 0], atol=1e-4)


def synthetic_csv(path: Path, days: int = 12) -> None:
    """Three detectors with a daily pattern, their own levels, and noise: 15-min counts."""
    rng = np.random.default_rng(0)
    steps = np.arange(days * 96)
    rows = []
    for k, level in enumerate((20, 35, 50)):
        wave = level + level * 0.6 * np.sin((steps % 96) / 96 * 2 * np.pi - k)
        rows.append(wave + rng.normal(0, level * 0.05, len(steps)))
    data = np.clip(np.stack(rows, axis=1), 1, None)
    lines = ["11,12,13"] + [",".join(f"{v:.2f}" for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")


def test_forecaster_beats_last_value_and_its_onnx_export_agrees(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs PyTorch (make install adds it)")
    import onnxruntime as ort

    from citybrain.forecast.commands import load_trained

    data = tmp_path / "counts.csv"
    synthetic_csv(data)
    common = ["--data", str(data), "--start", "2024-04-01T00:00", "--interval", "900"]
    trained = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "forecast", "train", *common,
         "--out", str(tmp_path / "m.pt"), "--epochs", "12", "--hidden", "32", "--no-fc-lstm",
         "--utc-offset", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    scored = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "forecast", "eval", *common,
         "--checkpoint", str(tmp_path / "m.pt"), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    figures = orjson.loads(scored.stdout.strip().splitlines()[-1])
    assert set(figures) >= {"model", "last_value", "historical_average"}
    assert figures["model"]["mae_avg"] < 0.8 * figures["last_value"]["mae_avg"]

    # The ONNX export gives the checkpoint's forecasts, on the training data's clock.
    model = load_trained(tmp_path / "m.pt", "forecaster")
    assert model.utc_offset_s == 8 * 3600 and model.profiles is not None
    assert orjson.loads((tmp_path / "m.json").read_bytes())["utc_offset_s"] == 8 * 3600
    series = load_wide_csv(data, "2024-04-01T00:00", 900)
    x_all, _ = model.features(series)
    x = np.ascontiguousarray(x_all[100:112].transpose(1, 0, 2))  # 3 detectors, 12 steps
    detector = np.arange(3, dtype=np.int64)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    onnx_out = session.run(None, {"x": x, "detector": detector})[0]
    import torch

    with torch.no_grad():
        torch_out = model.model(torch.from_numpy(x), torch.from_numpy(detector)).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_cli_errors_name_the_cause(tmp_path: Path) -> None:
    data = tmp_path / "w.csv"
    data.write_text("1,2\n3,4\n")
    out = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "forecast", "eval", "--data", str(data),
         "--checkpoint", "x.pt"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "needs --start" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "forecast", "train", "--data", str(data),
         "--start", "2024-04-01T00:00", "--interval", "900", "--out", str(tmp_path / "m.pt"),
         "--utc-offset", "80"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "--utc-offset 80.0 is not an offset" in out.stderr
