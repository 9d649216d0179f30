"""Online forecasts: every lane, at each bin close, from the history store.

For each lane with history (detector id ``rsu_id/camera_id/lane_id``), the flow in veh/h of
its last ``n_in`` bins feeds the exported ONNX model (no PyTorch at run time).  A lane the
model does not know, or with too little recent history, falls back to the historical
average of its own history at the same time of day, and then to its last value, and the
forecast says which method made it and why.  A forecast is never NaN or negative: such a
value is replaced by the fallback, and flows are clipped at 0.

Forecasts are kept in Redis (``cb:forecasts``, one field per detector) for the API and the
planners.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import redis

from citybrain.forecast.data import SeriesSet, load_history
from citybrain.forecast.model import features
from citybrain.forecast.profile import DayProfiles, day_kind
from citybrain.history import HistoryStore

log = logging.getLogger(__name__)

FORECASTS_HASH = "cb:forecasts"
PRECISIONS = ("fp32", "int8", "bf16")


def default_precision(onnx_path: Path, runtime: str) -> str:
    """The fastest precision that keeps the model's accuracy (BENCHMARKS.md)."""
    if runtime == "openvino":
        return "bf16"
    if quantized_path(onnx_path).exists():
        return "int8"
    log.warning("%s has no int8 model beside it (exported before int8 serving): fp32", onnx_path)
    return "fp32"


def quantized_path(onnx_path: Path) -> Path:
    """Where export writes the int8 model of ``M.onnx``: ``M-int8.onnx``."""
    return onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")


@dataclass
class OnlineModel:
    """The exported forecaster (``M.onnx`` and ``M.json``), run by ONNX Runtime or OpenVINO."""

    session: object
    ids: dict[str, int]
    interval_s: int
    n_in: int
    n_out: int
    mean: np.ndarray
    std: np.ndarray
    adjacency: np.ndarray | None
    weekday: bool = True
    profiles: DayProfiles | None = None
    utc_offset_s: int = 0  # the training data's local clock

    @classmethod
    def load(
        cls, onnx_path: Path, runtime: str = "onnxruntime", precision: str | None = None
    ) -> OnlineModel:
        """``runtime``: ``onnxruntime``, or ``openvino`` (the openvino extra).

        ``precision``: ``fp32``; ``int8``, ONNX Runtime on the int8-weight ``M-int8.onnx``
        that export writes beside ``M.onnx``; ``bf16``, OpenVINO on CPUs with bf16 arithmetic
        (elsewhere OpenVINO runs fp32). By default int8 with ONNX Runtime (fp32 for a model
        exported without it) and bf16 with OpenVINO: on the benchmark machine int8 took about
        a sixth off a pass of ONNX Runtime, and either moved the Los-loop test MAE by less
        than 0.1% (BENCHMARKS.md)."""
        meta = orjson.loads(onnx_path.with_suffix(".json").read_bytes())
        if precision is None:
            precision = default_precision(onnx_path, runtime)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown forecast precision {precision!r}: {', '.join(PRECISIONS)}")
        if runtime == "openvino":
            if precision == "int8":
                raise ValueError(
                    "int8 is ONNX Runtime's dynamic quantisation; with openvino use bf16 or fp32"
                )
            session: object = OpenVinoSession(onnx_path, precision)
        elif runtime == "onnxruntime":
            if precision == "bf16":
                raise ValueError("bf16 needs runtime openvino; ONNX Runtime serves fp32 or int8")
            import onnxruntime as ort

            path = quantized_path(onnx_path) if precision == "int8" else onnx_path
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} not found: `citybrain forecast train` writes it beside M.onnx "
                    "(models exported before int8 serving have none: train again, or serve "
                    "with precision fp32)"
                )
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        else:
            raise ValueError(f"unknown forecast runtime {runtime!r}: onnxruntime or openvino")
        adjacency = meta.get("adjacency")
        return cls(
            session=session,
            ids={d: i for i, d in enumerate(meta["ids"])},
            interval_s=int(meta["interval_s"]),
            n_in=int(meta["n_in"]),
            n_out=int(meta["n_out"]),
            mean=np.asarray(meta["mean"], np.float32),
            std=np.asarray(meta["std"], np.float32),
            adjacency=None if adjacency is None else np.asarray(adjacency, np.float32),
            weekday=bool(meta.get("weekday", True)),
            profiles=_profiles(meta.get("profiles"), onnx_path.parent),
            utc_offset_s=int(meta.get("utc_offset_s", 0)),
        )

    def features(self, series: SeriesSet) -> np.ndarray:
        """The model's step features ``[T, N, F]`` of ``series`` (its detectors, its order)."""
        x, _ = features(
            replace(series, utc_offset_s=self.utc_offset_s),
            self.adjacency,
            self.mean,
            self.std,
            self.weekday,
            self.profiles,
            self.n_out,
        )
        return x

    def run(self, x: np.ndarray, detector: np.ndarray) -> np.ndarray:
        """Normalised forecasts ``[B, n_out]`` of windows ``x [B, n_in, F]`` of ``detector``."""
        feeds = {"x": np.ascontiguousarray(x), "detector": detector.astype(np.int64)}
        return self.session.run(None, feeds)[0]  # type: ignore[attr-defined]

    def predict(self, recent: SeriesSet) -> np.ndarray:
        """``recent``: the model's detectors in its order, the last n_in rows -> [N, n_out]."""
        x = self.features(recent).transpose(1, 0, 2)
        out = self.run(x, np.arange(x.shape[0]))
        return out * self.std[:, None] + self.mean[:, None]


def _profiles(state: dict | None, folder: Path) -> DayProfiles | None:
    if not state:
        return None
    if "arrays" in state:
        return DayProfiles.read_arrays(state, folder)
    return DayProfiles.from_state(state)  # exported before the arrays had a file of their own


class OpenVinoSession:
    """An exported forecaster compiled by OpenVINO (CPU, fp32 or bf16), with ONNX Runtime's
    ``run``."""

    def __init__(self, onnx_path: Path, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ImportError(
                "the openvino runtime needs the openvino extra: "
                "pip install 'v2x-citybrain[openvino]'"
            ) from None
        hint = "bf16" if precision == "bf16" else "f32"
        properties = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        compiled = ov.Core().compile_model(str(onnx_path), "CPU", properties)
        self._request = compiled.create_infer_request()

    def run(self, _outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self._request.infer(feeds)
        # Copy: the tensor's memory is reused by the next inference.
        return [self._request.get_output_tensor(0).data.copy()]


@dataclass
class Forecast:
    detector: str
    generated_ms: int
    bin_s: int
    method: str  # model, historical_average, last_value, none
    reason: str | None
    flows_veh_h: list[float]  # one per step ahead

    def horizons(self) -> list[dict[str, float]]:
        return [
            {"minutes": (k + 1) * self.bin_s // 60, "flow_veh_h": v}
            for k, v in enumerate(self.flows_veh_h)
        ]


class ForecastService:
    def __init__(
        self,
        history: HistoryStore,
        client: redis.Redis,
        model: OnlineModel | None = None,
        bin_s: int = 300,
        n_out: int = 12,
        lookback_days: int = 7,
        utc_offset_s: int | None = None,
    ) -> None:
        """``utc_offset_s``: the detectors' local clock, for the fallback's time of day and
        weekends (default: the model's, else UTC)."""
        self.history = history
        self.client = client
        self.model = model
        if utc_offset_s is None:
            utc_offset_s = model.utc_offset_s if model else 0
        self.utc_offset_s = utc_offset_s
        self.bin_s = model.interval_s if model else bin_s
        self.n_out = model.n_out if model else n_out
        self.n_in = model.n_in if model else 12
        self.lookback_ms = lookback_days * 86_400_000

    def run_once(self, now_ms: int | None = None) -> list[Forecast]:
        """Forecasts for every lane with history, from the last closed bin; stored in Redis."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        bin_ms = self.bin_s * 1000
        closed = now // bin_ms * bin_ms  # the start of the bin now open: history ends here
        series = self.history_series(closed - self.lookback_ms, closed)
        forecasts = self.forecast(series, now)
        if forecasts:
            self.client.hset(
                FORECASTS_HASH,
                mapping={f.detector: orjson.dumps(f.__dict__) for f in forecasts},
            )
        return forecasts

    def history_series(self, since_ms: int, until_ms: int) -> SeriesSet:
        series = load_history(self.history, self.bin_s, since_ms, until_ms)
        return replace(series, utc_offset_s=self.utc_offset_s)

    def forecast(self, series: SeriesSet, now_ms: int) -> list[Forecast]:
        out = []
        recent = series.values[-self.n_in :]
        model_rows: dict[str, np.ndarray] = {}
        if self.model is not None and series.ids:
            known = [d for d in series.ids if d in self.model.ids]
            if known:
                grid = np.full((self.n_in, len(self.model.ids)), np.nan, np.float32)
                for d in known:
                    grid[:, self.model.ids[d]] = recent[:, series.ids.index(d)]
                start = series.times_ms[-self.n_in]
                names = sorted(self.model.ids, key=self.model.ids.get)  # type: ignore[arg-type]
                predicted = self.model.predict(SeriesSet(grid, int(start), self.bin_s, names))
                model_rows = {d: predicted[self.model.ids[d]] for d in known}
        calendar = _Calendar.of(series, self.n_out)
        for j, detector in enumerate(series.ids):
            column = series.values[:, j]
            history_here = recent[:, j]
            enough = np.count_nonzero(~np.isnan(history_here)) >= math.ceil(self.n_in / 2)
            method, reason, flows = "model", None, model_rows.get(detector)
            if flows is not None and not enough:
                flows, reason = None, f"fewer than {math.ceil(self.n_in / 2)} recent bins"
            elif flows is None:
                reason = "no trained model" if self.model is None else "unknown to the model"
            if flows is None or not np.all(np.isfinite(flows)):
                method, flows = self._fallback(column, calendar)
            out.append(
                Forecast(
                    detector=detector,
                    generated_ms=now_ms,
                    bin_s=self.bin_s,
                    method=method,
                    reason=reason if method != "model" else None,
                    flows_veh_h=[round(float(max(0.0, v)), 1) for v in flows],
                )
            )
        return out

    def _fallback(self, column: np.ndarray, calendar: _Calendar) -> tuple[str, np.ndarray]:
        """Historical average at the same time of day, weekdays apart from weekends (every
        day at that time where the day kind has none), else the last value, else zeros."""
        valid = ~np.isnan(column)
        averages = []
        for slot, kind in zip(calendar.ahead_slots, calendar.ahead_kinds, strict=True):
            same = valid & (calendar.slots == slot)
            same_kind = same & (calendar.kinds == kind)
            rows = same_kind if same_kind.any() else same
            averages.append(float(column[rows].mean()) if rows.any() else math.nan)
        if not any(math.isnan(a) for a in averages):
            return "historical_average", np.asarray(averages)
        if valid.any():
            return "last_value", np.full(self.n_out, column[valid][-1])
        return "none", np.zeros(self.n_out)


@dataclass(frozen=True)
class _Calendar:
    """Slot of the day and day kind (weekday, weekend) of a series' rows, on its local
    clock, and of the ``n_out`` bins after its last row."""

    slots: np.ndarray
    kinds: np.ndarray
    ahead_slots: np.ndarray
    ahead_kinds: np.ndarray

    @classmethod
    def of(cls, series: SeriesSet, n_out: int) -> _Calendar:
        local = series.local_ms
        last = int(local[-1]) if len(local) else 0
        ahead = last + (1 + np.arange(n_out, dtype=np.int64)) * series.interval_s * 1000
        ahead_slots = ahead // 1000 % 86_400 // series.interval_s
        return cls(series.time_of_day(), day_kind(local), ahead_slots, day_kind(ahead))


def stored_forecasts(client: redis.Redis, detectors: list[str] | None = None) -> list[dict]:
    if detectors:
        raw = client.hmget(FORECASTS_HASH, detectors)
        return [orjson.loads(r) for r in raw if r]
    return [orjson.loads(v) for _, v in sorted(client.hgetall(FORECASTS_HASH).items())]
