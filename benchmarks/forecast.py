"""The flow forecaster against its baselines on real data, and its serving speed.

For each dataset (the Los-loop speeds and the Oregon intersection counts, from the shared
data directory): train the LSTM forecaster and FC-LSTM on the chronological 7:1:2 split
(fixed seed, early stopping on validation), then score them on the test windows in the same
run as last value and the historical average by time of day.  Then time one forecast pass
of the exported ONNX model for ``--detectors`` detectors (the Los model, its detectors
repeated), features included, as citybrain would run it at each bin close.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def run_dataset(name: str, series, adjacency, config, tmp: Path) -> dict:
    from citybrain.forecast.commands import evaluate, export_onnx
    from citybrain.forecast.model import train
    from citybrain.forecast.protocol import chronological_split

    split = chronological_split(len(series.values))
    forecaster = train("forecaster", series, split, config, adjacency, progress=False)
    fc_lstm = train("fc_lstm", series, split, config, progress=False)
    results = evaluate(
        series, split, split.val_end, {"forecaster": forecaster, "fc_lstm": fc_lstm},
        config.n_in, config.n_out,
    )  # fmt: skip
    onnx_path = export_onnx(forecaster, tmp / f"{name}.onnx", series.ids, series.interval_s)
    results["training"] = {
        "forecaster": {"seconds": round(forecaster.seconds, 1), "epochs": forecaster.epochs_run,
                       "parameters": forecaster.parameters(),
                       "onnx_bytes": onnx_path.stat().st_size},
        "fc_lstm": {"seconds": round(fc_lstm.seconds, 1), "epochs": fc_lstm.epochs_run,
                    "parameters": fc_lstm.parameters()},
    }  # fmt: skip
    results["_onnx"] = str(onnx_path)
    results["_trained"] = forecaster
    return results


def serving_pass(
    onnx_path: str, trained, series, detectors: int, reps: int, runtime: str = "onnxruntime"
) -> dict:
    """One forecast for ``detectors`` detectors from their last n_in readings, in ms, by
    ``runtime`` as ``citybrain forecast serve --runtime`` would run it."""
    from citybrain.forecast.online import OnlineModel

    session = OnlineModel.load(Path(onnx_path), runtime).session
    n = series.values.shape[1]
    repeat = -(-detectors // n)
    config = trained.config
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        window = series.values[-config.n_in :]
        sub = type(series)(window, series.times_ms[-config.n_in], series.interval_s, series.ids)
        x, _ = trained.features(sub)
        x = np.ascontiguousarray(np.tile(x.transpose(1, 0, 2), (repeat, 1, 1))[:detectors])
        ids = np.tile(np.arange(n, dtype=np.int64), repeat)[:detectors]
        out = session.run(None, {"x": x, "detector": ids})[0]  # type: ignore[attr-defined]
        forecast = (
            out * np.tile(trained.std, repeat)[:detectors, None]
            + np.tile(trained.mean, repeat)[:detectors, None]
        )
        times.append((time.perf_counter() - start) * 1000)
    assert forecast.shape == (detectors, config.n_out)
    return {
        "detectors": detectors,
        "forecast_pass_p50_ms": round(float(np.percentile(times, 50)), 2),
        "forecast_pass_p99_ms": round(float(np.percentile(times, 99)), 2),
    }


def main() -> int:
    from citybrain.forecast.model import TrainConfig

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--max-train-windows", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    parser.add_argument("--detectors", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--datasets", default="los,counts")
    parser.add_argument("--residual", action="store_true")
    parser.add_argument("--members", type=int, default=TrainConfig.members, help="seeds averaged")
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    args = parser.parse_args()

    from rsu_latency import machine_info

    from citybrain.forecast.data import load_long, load_wide_csv
    from common.datadir import resolve_asset

    config = TrainConfig(
        epochs=args.epochs,
        hidden=args.hidden,
        max_train_windows=args.max_train_windows,
        residual=args.residual,
        members=args.members,
        patience=args.patience,
    )
    figures: dict = {"config": {"epochs": args.epochs, "hidden": args.hidden}}
    figures["config"] |= {"max_train_windows": args.max_train_windows, "seed": config.seed}
    figures["config"] |= {
        "residual": args.residual,
        "members": args.members,
        "patience": args.patience,
    }
    tmp = Path(tempfile.mkdtemp(prefix="v2x-forecast-"))
    los = None
    for name in args.datasets.split(","):
        if name == "los":
            series = load_wide_csv(
                resolve_asset("flow/los_loop/los_speed_5days.csv"), "2012-03-01T00:00", 300
            )
            adjacency = np.loadtxt(
                resolve_asset("flow/los_loop/los_adj.csv"), delimiter=",", dtype=np.float32
            )
        else:
            series = load_long(resolve_asset("flow/intersection_counts/counts_15min.parquet"))
            adjacency = None
        result = run_dataset(name, series, adjacency, config, tmp)
        if name == "los":
            los = (result["_onnx"], result["_trained"], series)
        del result["_onnx"], result["_trained"]
        figures[name] = result
        print(f"{name}: {result['windows']} test windows")
        for method in ("model", "fc_lstm", "last_value", "historical_average"):
            r = result[method]
            print(f"  {method:<20} MAE 15/30/60 {r.get('mae_15')}/{r.get('mae_30')}/"
                  f"{r.get('mae_60')}  avg {r['mae_avg']}")  # fmt: skip
        last = result["last_value"]["mae_avg"]
        figures[name]["model_vs_last_value"] = round(1 - result["model"]["mae_avg"] / last, 3)
    if los is not None:
        figures["serving"] = serving_pass(*los, detectors=args.detectors, reps=args.reps)
        with contextlib.suppress(ImportError):  # without the openvino extra: ONNX Runtime only
            by_openvino = serving_pass(*los, args.detectors, args.reps, runtime="openvino")
            figures["serving"]["openvino"] = {
                k: v for k, v in by_openvino.items() if k.startswith("forecast_pass")
            }
        print(f"one forecast pass for {args.detectors} detectors: "
              f"p50 {figures['serving']['forecast_pass_p50_ms']} ms")  # fmt: skip
    figures["machine"] = machine_info()
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
