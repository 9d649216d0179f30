"""The flow forecaster against its baselines on real data, and its serving speed.

For each dataset (the Los-loop speeds and the Oregon intersection counts, from the shared
data directory): train the LSTM forecaster and FC-LSTM on the chronological 7:1:2 split
(fixed seed, early stopping on validation), then score them on the test windows in the same
run as last value and the historical average by time of day.  Then time one forecast pass
of the exported ONNX model for ``--detectors`` detectors (the Los model, its detectors
repeated), features included, as ``citybrain forecast serve`` runs it at each bin close:
with serve's default (ONNX Runtime, int8 weights) and the other runtimes and precisions,
each in a process of its own, taking turns; with the test MAE of what each serves.
``--serving-only M.onnx`` times an exported Los-loop model without training.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import subprocess
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


SERVING_VARIANTS = (
    ("onnxruntime", None),  # forecast serve's default: int8
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
)


def serving_passes(
    onnx_path: Path,
    series,
    detectors: int,
    reps: int,
    runtime: str,
    precision: str | None,
    score: bool = True,
) -> dict:
    """One forecast for ``detectors`` detectors (the model's, repeated) from their last n_in
    readings, features included, in ms, ``reps`` times, as ``citybrain forecast serve`` runs
    it with ``runtime`` and ``precision`` (None: serve's default); and, with ``score``, the
    test MAE.

    A 20 ms pause comes before each pass: serve runs one pass per bin."""
    from citybrain.forecast.online import OnlineModel, default_precision

    precision = precision or default_precision(onnx_path, runtime)
    model = OnlineModel.load(onnx_path, runtime, precision)
    n = series.values.shape[1]
    repeat = -(-detectors // n)
    ids = np.tile(np.arange(n), repeat)[:detectors]
    times = []
    for _ in range(reps):
        time.sleep(0.02)
        start = time.perf_counter()
        recent = type(series)(
            series.values[-model.n_in :], series.times_ms[-model.n_in], series.interval_s,
            series.ids,
        )  # fmt: skip
        x = model.features(recent).transpose(1, 0, 2)
        out = model.run(np.tile(x, (repeat, 1, 1))[:detectors], ids)
        forecast = out * model.std[ids, None] + model.mean[ids, None]
        times.append((time.perf_counter() - start) * 1000)
        assert forecast.shape == (detectors, model.n_out)
    return {
        "runtime": runtime,
        "precision": precision,
        "times_ms": times,
        "test_mae_avg": served_test_mae(model, series) if score else None,
    }


def serving_comparison(onnx_path: str, detectors: int, reps: int, rounds: int = 3) -> dict:
    """``serving_passes`` of every variant, each in a process of its own (as serve runs it:
    one session, no PyTorch threads from training), taking turns for ``rounds`` rounds.
    Two sessions in one process slowed each other by a third, even idle ones."""
    times: dict[str, list[float]] = {}
    meta: dict[str, dict] = {}
    for round_no in range(rounds):
        for runtime, precision in SERVING_VARIANTS:
            command = [sys.executable, __file__, "--serving-only", onnx_path, "--runtime", runtime]
            command += ["--detectors", str(detectors), "--reps", str(-(-reps // rounds))]
            if precision:
                command += ["--precision", precision]
            if round_no:
                command.append("--no-score")  # the model's accuracy is the same every round
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                if "openvino extra" in done.stderr:
                    continue  # without the openvino extra: ONNX Runtime only
                raise RuntimeError(done.stderr)
            result = orjson.loads(done.stdout.strip().splitlines()[-1])
            key = f"{result['runtime']}_{result['precision']}"
            times.setdefault(key, []).extend(result.pop("times_ms"))
            meta.setdefault(key, result)
    figures: dict = {}
    for key, t in times.items():
        summary = {
            "forecast_pass_p50_ms": round(float(np.percentile(t, 50)), 2),
            "forecast_pass_p99_ms": round(float(np.percentile(t, 99)), 2),
            "test_mae_avg": meta[key]["test_mae_avg"],
        }
        if not figures:  # serve's default: the headline figures
            figures = {"detectors": detectors, "runtime": meta[key]["runtime"]}
            figures |= {"precision": meta[key]["precision"], "passes": len(t)} | summary
        figures[key] = summary
    return figures


def served_test_mae(model, series) -> float:
    """Average-horizon MAE on the test windows of the forecasts ``model`` (an OnlineModel:
    the exported model at the precision it serves) makes."""
    from citybrain.forecast.protocol import chronological_split, masked_metrics, window_starts

    n = series.values.shape[1]
    end = len(series.values)
    starts = window_starts(chronological_split(end).val_end, end, model.n_in, model.n_out)
    x_all = model.features(series)
    out = []
    for i in range(0, len(starts), 16):
        chunk = starts[i : i + 16]
        hist = chunk[:, None] + np.arange(-model.n_in, 0)[None, :]
        x = x_all[hist].transpose(0, 2, 1, 3).reshape(len(chunk) * n, model.n_in, -1)
        y = model.run(x, np.tile(np.arange(n), len(chunk)))
        out.append(y.reshape(len(chunk), n, model.n_out).transpose(0, 2, 1))
    forecast = np.concatenate(out) * model.std + model.mean
    rows = starts[:, None] + np.arange(model.n_out)[None, :]
    return masked_metrics(forecast, series.values[rows], series.interval_s)["mae_avg"]


def los_series():
    from citybrain.forecast.data import load_wide_csv
    from common.datadir import resolve_asset

    csv = resolve_asset("flow/los_loop/los_speed_5days.csv")
    return load_wide_csv(csv, "2012-03-01T00:00", 300)


def main() -> int:
    from citybrain.forecast.model import TrainConfig

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--max-train-windows", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    parser.add_argument("--detectors", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--datasets", default="los,counts")
    parser.add_argument("--residual", action="store_true")
    parser.add_argument("--members", type=int, default=TrainConfig.members, help="seeds averaged")
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    parser.add_argument(
        "--serving-only", metavar="M.onnx",
        help="no training: time serving of this exported Los-loop model, as serve runs it",
    )  # fmt: skip
    parser.add_argument("--runtime", help="--serving-only: this runtime alone, its times")
    parser.add_argument("--precision", help="--serving-only --runtime: this precision")
    parser.add_argument("--no-score", action="store_true", help="--serving-only: times only")
    args = parser.parse_args()
    if args.serving_only and args.runtime:
        figures = serving_passes(Path(args.serving_only), los_series(), args.detectors,
                                 args.reps, args.runtime, args.precision,
                                 score=not args.no_score)  # fmt: skip
        print(orjson.dumps(figures).decode())
        return 0
    if args.serving_only:
        serving = serving_comparison(args.serving_only, args.detectors, args.reps)
        print(orjson.dumps({"serving": serving}).decode())
        return 0

    from rsu_latency import machine_info

    from citybrain.forecast.data import load_long
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
            series = los_series()
            adjacency = np.loadtxt(
                resolve_asset("flow/los_loop/los_adj.csv"), delimiter=",", dtype=np.float32
            )
        else:
            series = load_long(resolve_asset("flow/intersection_counts/counts_15min.parquet"))
            adjacency = None
        result = run_dataset(name, series, adjacency, config, tmp)
        if name == "los":
            los = result["_onnx"]
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
        figures["serving"] = serving_comparison(los, args.detectors, args.reps)
        print(f"one forecast pass for {args.detectors} detectors: "
              f"p50 {figures['serving']['forecast_pass_p50_ms']} ms")  # fmt: skip
    figures["machine"] = machine_info()
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
