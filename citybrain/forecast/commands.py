"""``citybrain forecast train|eval``: fit the forecaster (and FC-LSTM), score them against
the baselines in one run, export to ONNX for serving."""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from citybrain.forecast.baselines import HistoricalAverage, last_value
from citybrain.forecast.data import DataError, SeriesSet, load_long, load_wide_csv
from citybrain.forecast.model import TrainConfig, Trained, input_features, predict, train
from citybrain.forecast.online import PRECISIONS, quantized_path
from citybrain.forecast.profile import DayProfiles
from citybrain.forecast.protocol import Split, chronological_split, masked_metrics, window_starts


def load_series(args: argparse.Namespace) -> SeriesSet:
    if args.format == "history" or args.data.startswith(("sqlite://", "postgresql://")):
        return history_series(args)
    path = Path(args.data)
    fmt = args.format or ("long" if path.suffix == ".parquet" else "wide")
    if fmt == "wide":
        if not args.start or not args.interval:
            raise DataError("wide CSV data needs --start (ISO time of row 0) and --interval (s)")
        return load_wide_csv(path, args.start, args.interval, zero_is_missing=not args.keep_zeros)
    return load_long(path, interval_s=args.interval)


def history_series(args: argparse.Namespace) -> SeriesSet:
    """``--data sqlite:///... | postgresql://...``: the lanes' flows in the history store,
    ``--interval`` 60 or 300 s, from ``--start`` (default: 28 days back) to now."""
    import time

    from citybrain.forecast.data import load_history, parse_time
    from citybrain.history import HistoryError, open_history

    now = int(time.time() * 1000)
    since = parse_time(args.start) if args.start else now - 28 * 86_400_000
    try:
        store = open_history(args.data)
        return load_history(store, args.interval or 300, since, now)
    except HistoryError as exc:
        raise DataError(str(exc)) from None


def load_adjacency(path: str | None, n: int) -> np.ndarray | None:
    if not path:
        return None
    try:
        matrix = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read adjacency {path}: {exc}") from None
    if matrix.shape != (n, n):
        raise DataError(f"adjacency {path} is {matrix.shape}, the data has {n} detectors")
    return matrix


def _train(args: argparse.Namespace) -> int:
    import torch

    if not -14 <= args.utc_offset <= 14:
        raise DataError(f"--utc-offset {args.utc_offset} is not an offset from UTC in hours")
    series = replace(load_series(args), utc_offset_s=round(args.utc_offset * 3600))
    split = chronological_split(len(series.values))
    adjacency = load_adjacency(args.adjacency, series.values.shape[1])
    config = TrainConfig(
        n_in=args.n_in, n_out=args.n_out, epochs=args.epochs, seed=args.seed,
        hidden=args.hidden, max_train_windows=args.max_train_windows, residual=args.residual,
        members=args.members, patience=args.patience,
    )  # fmt: skip
    models = {"forecaster": train("forecaster", series, split, config, adjacency)}
    if not args.no_fc_lstm:
        models["fc_lstm"] = train("fc_lstm", series, split, config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    training = {
        kind: {
            "epochs": t.epochs_run,
            "seconds": round(t.seconds, 1),
            "parameters": t.parameters(),
            "best_val_mae_normalised": round(t.best_val_mae, 4),
        }
        for kind, t in models.items()
    }
    data = {"interval_s": series.interval_s, "ids": series.ids, "rows": len(series.values)}
    saved = {"data": data, "split": asdict(split), "training": training}
    saved |= {kind: trained.state() for kind, trained in models.items()}
    torch.save(saved, out)
    onnx_path = export_onnx(
        models["forecaster"], out.with_suffix(".onnx"), series.ids, series.interval_s
    )
    summary = {"checkpoint": str(out), "onnx": str(onnx_path), **training}
    print(orjson.dumps(summary).decode())
    return 0


def export_onnx(trained: Trained, path: Path, ids: list[str], interval_s: int) -> Path:
    """The forecaster as ONNX: inputs ``x [B, n_in, F]`` and ``detector [B]`` (int64); beside
    it ``M-int8.onnx``, the same with int8 weights (ONNX Runtime's dynamic quantisation), and
    ``M.json``, what serving needs without PyTorch: the detector ids, the normalisation, the
    window sizes, the adjacency, and the daily profiles, whose arrays are in
    ``M-profiles.npz``."""
    import warnings

    import torch

    config = trained.config
    x = torch.zeros(2, config.n_in, input_features(trained.model))
    detector = torch.zeros(2, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            trained.model, (x, detector), str(path), dynamo=False,
            input_names=["x", "detector"], output_names=["forecast"],
            dynamic_axes={"x": {0: "batch"}, "detector": {0: "batch"}, "forecast": {0: "batch"}},
        )  # fmt: skip
    write_int8(path)
    meta = {
        "ids": ids,
        "interval_s": interval_s,
        "n_in": config.n_in,
        "n_out": config.n_out,
        "weekday": bool(config.weekday),
        "mean": trained.mean.tolist(),
        "std": trained.std.tolist(),
        "adjacency": None if trained.adjacency is None else trained.adjacency.tolist(),
        "profiles": None
        if trained.profiles is None
        else trained.profiles.write_arrays(path.with_name(f"{path.stem}-profiles.npz")),
        "utc_offset_s": trained.utc_offset_s,
    }
    path.with_suffix(".json").write_bytes(orjson.dumps(meta))
    return path


def write_int8(onnx_path: Path) -> Path:
    """``M-int8.onnx``: the LSTM and dense weights as int8, activations quantised per batch
    at run time, for ``forecast serve --precision int8``."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = quantized_path(onnx_path)
    # It warns on the root logger about shape pre-processing, which dynamic quantisation of
    # these weights does not need.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(onnx_path, out, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return out


def load_trained(checkpoint: Path, kind: str) -> Trained:
    import torch

    from citybrain.forecast.model import build_fc_lstm, build_forecaster

    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = saved[kind]
    # A key missing from an older checkpoint means what that version did.
    config = TrainConfig(**({"members": 1, "day_profile": False} | state["config"]))
    n = len(state["mean"])
    adjacency = None if state["adjacency"] is None else np.asarray(state["adjacency"], np.float32)
    profiles = state.get("profiles")  # absent in checkpoints from before profiles
    if kind == "forecaster":
        inputs = next(v for k, v in state["weights"].items() if k.endswith("lstm.weight_ih_l0"))
        model = build_forecaster(n, inputs.shape[1] - config.embedding, config)
    else:
        model = build_fc_lstm(n, config)
    model.load_state_dict(state["weights"])
    model.eval()
    return Trained(
        kind, model, config, np.asarray(state["mean"], np.float32),
        np.asarray(state["std"], np.float32), adjacency, 0, 0.0, float("nan"),
        None if profiles is None else DayProfiles.from_state(profiles),
        int(state.get("utc_offset_s", 0)),
    )  # fmt: skip


def evaluate(
    series: SeriesSet,
    split: Split,
    test_start: int,
    models: dict[str, Trained],
    n_in: int,
    n_out: int,
) -> dict[str, Any]:
    starts = window_starts(test_start, len(series.values), n_in, n_out)
    if not len(starts):
        raise DataError(f"no test window: rows {test_start}..{len(series.values)} are too few")
    hist = starts[:, None] + np.arange(-n_in, 0)[None, :]
    rows = starts[:, None] + np.arange(n_out)[None, :]
    target = series.values[rows]
    average = HistoricalAverage(series, min(split.train_end, test_start))
    results: dict[str, Any] = {}
    for kind, trained in models.items():
        name = "model" if kind == "forecaster" else kind
        results[name] = masked_metrics(predict(trained, series, starts), target, series.interval_s)
    results["last_value"] = masked_metrics(
        last_value(series.values[hist], average.detector_mean, n_out), target, series.interval_s
    )
    results["historical_average"] = masked_metrics(average.predict(rows), target, series.interval_s)
    results["windows"] = len(starts)
    results["test_start_row"] = int(test_start)
    return results


def _eval(args: argparse.Namespace) -> int:
    series = load_series(args)
    split = chronological_split(len(series.values))
    models = {"forecaster": load_trained(Path(args.checkpoint), "forecaster")}
    with contextlib.suppress(KeyError):  # trained with --no-fc-lstm
        models["fc_lstm"] = load_trained(Path(args.checkpoint), "fc_lstm")
    config = models["forecaster"].config
    if len(models["forecaster"].mean) != series.values.shape[1]:
        raise DataError(
            f"the checkpoint is for {len(models['forecaster'].mean)} detectors, "
            f"the data has {series.values.shape[1]}"
        )
    test_start = args.test_start if args.test_start is not None else split.val_end
    results = evaluate(series, split, test_start, models, config.n_in, config.n_out)
    if not args.json:
        for name in ("model", "fc_lstm", "last_value", "historical_average"):
            if name in results:
                r = results[name]
                print(f"{name:<20} MAE 15/30/60 min {r.get('mae_15')}/{r.get('mae_30')}/"
                      f"{r.get('mae_60')}  avg {r['mae_avg']}")  # fmt: skip
    print(orjson.dumps(results).decode())
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging
    import time

    from citybrain.config import load_citybrain_config
    from citybrain.forecast.online import ForecastService, OnlineModel
    from citybrain.history import open_history
    from common.bus import connect

    log = logging.getLogger("citybrain.forecast")
    config = load_citybrain_config(args.config, args.redis_url)
    model = OnlineModel.load(Path(args.model), args.runtime, args.precision) if args.model else None
    service = ForecastService(
        open_history(config.history.url),
        connect(config.bus.redis_url, config.bus.cluster),
        model,
        bin_s=args.bin,
        utc_offset_s=None if args.utc_offset is None else round(args.utc_offset * 3600),
    )
    while True:
        forecasts = service.run_once()
        methods: dict[str, int] = {}
        for f in forecasts:
            methods[f.method] = methods.get(f.method, 0) + 1
        log.info("forecast %d detectors: %s", len(forecasts), methods)
        if args.once:
            print(orjson.dumps({"detectors": len(forecasts), "methods": methods}).decode())
            return 0
        bin_ms = service.bin_s * 1000
        now = time.time() * 1000
        # Run just after each bin closes, once the RSUs' last intervals are in.
        time.sleep((bin_ms - now % bin_ms) / 1000 + args.delay)


def add_parser(sub: Any) -> None:
    forecast = sub.add_parser("forecast", help="train, evaluate and serve the flow forecaster")
    actions = forecast.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="forecast every lane at each bin close")
    serve.add_argument("--model", help="exported M.onnx (M.json beside); none: fallbacks only")
    serve.add_argument(
        "--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
        help="what runs the model (openvino: the openvino extra; see BENCHMARKS.md)",
    )  # fmt: skip
    serve.add_argument(
        "--precision", choices=PRECISIONS,
        help="default: int8 with onnxruntime (M-int8.onnx, written by train), bf16 with "
        "openvino; fp32 for the exact model (BENCHMARKS.md)",
    )  # fmt: skip
    serve.add_argument("--bin", type=int, default=300, help="bin seconds without a model")
    serve.add_argument(
        "--utc-offset", type=float,
        help="hours from UTC to the detectors' local clock, for the fallback's time of day "
        "and weekends (default: the model's, else 0)",
    )  # fmt: skip
    serve.add_argument("--delay", type=float, default=15.0, help="seconds after a bin closes")
    serve.add_argument("--once", action="store_true", help="one pass, then exit")
    serve.add_argument("--config", help="citybrain YAML config")
    serve.add_argument("--redis-url", help="bus URL (default: $REDIS_URL, then the config)")
    serve.set_defaults(func=_run(_serve))
    for name, func in (("train", _train), ("eval", _eval)):
        p = actions.add_parser(name)
        p.add_argument("--data", required=True, help="wide CSV, or long Parquet/CSV")
        p.add_argument(
            "--format", choices=["wide", "long", "history"],
            help="default: by file suffix; history: --data is a citybrain history URL",
        )  # fmt: skip
        p.add_argument("--start", help="wide data: ISO time of the first row")
        p.add_argument("--interval", type=int, help="seconds per row (long: inferred)")
        p.add_argument("--keep-zeros", action="store_true", help="wide: 0 is a reading")
        p.set_defaults(func=_run(func))
        if name == "train":
            p.add_argument("--out", required=True, help="checkpoint to write (.pt; .onnx beside)")
            p.add_argument(
                "--utc-offset", type=float, default=0.0,
                help="hours from UTC to the detectors' local clock (8 for Beijing): time of "
                "day and weekends follow it; the model keeps it for eval and serving",
            )  # fmt: skip
            p.add_argument("--adjacency", help="N x N CSV of detector weights")
            p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
            p.add_argument("--hidden", type=int, default=TrainConfig.hidden)
            p.add_argument("--n-in", type=int, default=12)
            p.add_argument("--n-out", type=int, default=12)
            p.add_argument("--seed", type=int, default=7)
            p.add_argument(
                "--patience",
                type=int,
                default=TrainConfig.patience,
                help="epochs without a better validation MAE before stopping",
            )
            p.add_argument(
                "--members", type=int, default=TrainConfig.members,
                help="forecasters averaged, one per seed from --seed on (1: a single model)",
            )  # fmt: skip
            p.add_argument("--max-train-windows", type=int, help="windows sampled per epoch")
            p.add_argument("--no-fc-lstm", action="store_true", help="skip the FC-LSTM baseline")
            p.add_argument(
                "--residual", action="store_true", help="predict the change from the last reading"
            )
        else:
            p.add_argument("--checkpoint", required=True)
            p.add_argument("--test-start", type=int, help="first target row of the test windows")
            p.add_argument("--json", action="store_true", help="only the JSON line")


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (DataError, ImportError) as exc:
            print(f"citybrain forecast: error: {exc}", file=sys.stderr)
            return 2

    return wrapped
