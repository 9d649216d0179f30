"""The LSTM forecaster, and FC-LSTM as a baseline (PyTorch, for training; ONNX for serving).

**Forecaster** (one model for every detector):

- Per detector and step, the inputs are:
  - the reading, normalised by the detector's training mean and spread (0 where missing),
  - the missing flag,
  - time of day as a sine/cosine pair, and day of week too when the training data spans
    two weeks or more,
  - with an adjacency matrix, the weighted mean of the neighbours' normalised readings,
  - with ``day_profile``, the detector's daily profile now and ``n_out`` steps later
    (:mod:`citybrain.forecast.profile`): weekdays apart from weekends, learnt from the
    training rows.
- A learned per-detector embedding is appended to every step.
- An LSTM reads the ``n_in`` steps. A small MLP head maps its last state (and the
  embedding) to the ``n_out`` steps ahead, in normalised units.
- With ``residual``, the head predicts the change from the last reading instead. On the
  Los-loop slice that was worse: 3.67 against 3.50 average MAE (BENCHMARKS.md).
- Trained with masked MAE: a missing target contributes nothing.
- ``members`` forecasters, each from its own seed and early-stopped on its own, make the
  model: it averages their forecasts (one ONNX graph).

**FC-LSTM** (the DCRNN paper's baseline): one LSTM over the whole sensor vector per step,
whose last state a linear layer maps to every sensor's ``n_out`` steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from citybrain.forecast.data import SeriesSet
from citybrain.forecast.profile import DayProfiles
from citybrain.forecast.protocol import Split, window_starts


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError(
            "training the forecaster needs PyTorch: pip install 'v2x-citybrain[forecast]'"
        ) from None
    return torch


@dataclass
class TrainConfig:
    n_in: int = 12
    n_out: int = 12
    hidden: int = 96
    embedding: int = 8
    epochs: int = 40
    patience: int = 6
    batch_windows: int = 16
    lr: float = 2e-3
    seed: int = 7
    max_train_windows: int | None = None  # sample per epoch (speed); None = all
    residual: bool = False  # predict the change from the last reading
    # Day-of-week features; None: only when the training rows span two weeks or more (with
    # less, a test day may be a weekday the model never saw, and the feature misleads it).
    weekday: bool | None = None
    # The detector's daily profile as inputs: on the Los-loop slice, 3.33 against 3.55
    # average MAE over three seeds (BENCHMARKS.md).
    day_profile: bool = True
    # Forecasters trained with seeds seed, seed + 1, ...; the model averages their forecasts.
    # Seed alone moves the Los-loop average MAE by up to 0.07; three average it out.
    members: int = 3


def features(
    series: SeriesSet,
    adjacency: np.ndarray | None,
    mean: np.ndarray,
    std: np.ndarray,
    weekday: bool = True,
    profiles: DayProfiles | None = None,
    ahead: int = 0,
):
    """``[T, N, F]`` step features and the normalised values ``[T, N]`` (NaN kept).

    ``profiles``: add each step's daily profile, and the profile ``ahead`` steps later."""
    norm = (series.values - mean) / std
    filled = np.nan_to_num(norm, nan=0.0)
    missing = np.isnan(norm).astype(np.float32)
    tod = series.time_of_day() / series.steps_per_day * 2 * math.pi
    columns = [np.sin(tod), np.cos(tod)]
    if weekday:
        dow = series.day_of_week() / 7 * 2 * math.pi
        columns += [np.sin(dow), np.cos(dow)]
    calendar = np.stack(columns, axis=1)
    t, n = norm.shape
    parts = [
        filled[..., None],
        missing[..., None],
        np.broadcast_to(calendar[:, None, :], (t, n, calendar.shape[1])),
    ]
    if adjacency is not None:
        weights = adjacency.astype(np.float32).copy()
        np.fill_diagonal(weights, 0.0)
        sums = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)
        parts.append((filled @ weights.T)[..., None])
    if profiles is not None:
        times = series.times_ms
        later = np.full_like(norm, np.nan)  # the readings `ahead` steps later, where known
        later[: max(0, t - ahead)] = norm[ahead:]
        parts.append(profiles.at(times, norm)[..., None])
        parts.append(profiles.at(times + ahead * series.interval_s * 1000, later)[..., None])
    return np.concatenate(parts, axis=2).astype(np.float32), norm.astype(np.float32)


def build_forecaster(n_detectors: int, n_features: int, config: TrainConfig) -> Any:
    """One forecaster, or with ``config.members`` > 1 the average of that many."""
    if config.members <= 1:
        return _build_member(n_detectors, n_features, config)
    nn = _torch().nn

    class Ensemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(
                _build_member(n_detectors, n_features, config) for _ in range(config.members)
            )

        def forward(self, x: Any, detector: Any) -> Any:
            return sum(member(x, detector) for member in self.members) / len(self.members)

    return Ensemble()


def input_features(model: Any) -> int:
    """The per-step features a forecaster (or an ensemble of them) reads, embedding excluded."""
    first = model.members[0] if hasattr(model, "members") else model
    return int(first.lstm.input_size - first.embed.embedding_dim)


def _build_member(n_detectors: int, n_features: int, config: TrainConfig) -> Any:
    torch = _torch()
    nn = torch.nn

    class Forecaster(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(n_detectors, config.embedding)
            self.lstm = nn.LSTM(n_features + config.embedding, config.hidden, batch_first=True)
            self.head = nn.Sequential(
                nn.Linear(config.hidden + config.embedding, config.hidden),
                nn.ReLU(),
                nn.Linear(config.hidden, config.n_out),
            )

        def forward(self, x: Any, detector: Any) -> Any:
            # x [B, n_in, F], detector [B] -> [B, n_out]
            embedding = self.embed(detector)
            e = embedding[:, None, :].expand(-1, x.shape[1], -1)
            out, _ = self.lstm(torch.cat([x, e], dim=2))
            change = self.head(torch.cat([out[:, -1], embedding], dim=1))
            if config.residual:  # a change from the last reading (0, the mean, if missing)
                return x[:, -1, 0:1] + change
            return change

    return Forecaster()


def build_fc_lstm(n_detectors: int, config: TrainConfig) -> Any:
    torch = _torch()
    nn = torch.nn

    class FcLstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(2 * n_detectors, 4 * config.hidden, batch_first=True)
            self.head = nn.Linear(4 * config.hidden, n_detectors * config.n_out)

        def forward(self, x: Any) -> Any:
            # x [B, n_in, 2N] (values and missing flags) -> [B, n_out, N]
            out, _ = self.lstm(x)
            return self.head(out[:, -1]).view(x.shape[0], config.n_out, n_detectors)

    return FcLstm()


@dataclass
class Trained:
    kind: str  # "forecaster" or "fc_lstm"
    model: Any
    config: TrainConfig
    mean: np.ndarray
    std: np.ndarray
    adjacency: np.ndarray | None
    epochs_run: int
    seconds: float
    best_val_mae: float
    profiles: DayProfiles | None = None
    utc_offset_s: int = 0  # the local clock of the training data: calendar features use it

    def features(self, series: SeriesSet):
        """:func:`features` of ``series`` as this model was trained on them (on its clock)."""
        config = self.config
        return features(
            replace(series, utc_offset_s=self.utc_offset_s), self.adjacency, self.mean,
            self.std, bool(config.weekday),
            self.profiles, config.n_out,
        )  # fmt: skip

    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": asdict(self.config),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "adjacency": None if self.adjacency is None else self.adjacency.tolist(),
            "profiles": None if self.profiles is None else self.profiles.state(),
            "utc_offset_s": self.utc_offset_s,
            "weights": self.model.state_dict(),
        }


def normaliser(series: SeriesSet, split: Split) -> tuple[np.ndarray, np.ndarray]:
    train = series.values[: split.train_end]
    mean = np.nan_to_num(np.nanmean(train, axis=0), nan=0.0).astype(np.float32)
    std = np.nan_to_num(np.nanstd(train, axis=0), nan=1.0).astype(np.float32)
    return mean, np.where(std < 1e-3, 1.0, std).astype(np.float32)


def train(
    kind: str,
    series: SeriesSet,
    split: Split,
    config: TrainConfig,
    adjacency: np.ndarray | None = None,
    progress: bool = True,
) -> Trained:
    """Fit on the training rows, early-stop on the validation rows' masked MAE.

    A forecaster with ``config.members`` > 1 is that many fits, one per seed, averaged."""
    if config.weekday is None:
        config = replace(config, weekday=split.train_end * series.interval_s >= 14 * 86_400)
    mean, std = normaliser(series, split)
    profiles = None
    if kind == "forecaster" and config.day_profile:
        profiles = DayProfiles.fit(
            series.times_ms[: split.train_end],
            (series.values[: split.train_end] - mean) / std,
            series.interval_s,
            series.utc_offset_s,
        )
    x_all, y_all = features(
        series, adjacency, mean, std, bool(config.weekday), profiles, config.n_out
    )
    members = config.members if kind == "forecaster" else 1
    started = time.perf_counter()
    fits = [
        _fit(kind, replace(config, seed=config.seed + k, members=1), x_all, y_all, split,
             progress, f"train {kind}" + (f" {k + 1}/{members}" if members > 1 else ""))
        for k in range(members)
    ]  # fmt: skip
    if members > 1:
        model = build_forecaster(series.values.shape[1], x_all.shape[2], config)
        for slot, (member, _, _) in zip(model.members, fits, strict=True):
            slot.load_state_dict(member.state_dict())
        model.eval()
        best = _validation_mae(kind, model, config, x_all, y_all, split)
    else:
        model, _, best = fits[0]
    if kind != "forecaster":  # FC-LSTM: one model, no profile
        config = replace(config, members=1, day_profile=False)
    return Trained(
        kind, model, config, mean, std, adjacency, sum(f[1] for f in fits),
        time.perf_counter() - started, best, profiles, series.utc_offset_s,
    )  # fmt: skip


def _forward(
    kind: str, model: Any, config: TrainConfig, x_all: np.ndarray, starts: np.ndarray
) -> Any:
    """The model's normalised forecasts ``[B, n_out, N]`` of the windows whose first target
    is at ``starts``."""
    torch = _torch()
    n = x_all.shape[1]
    hist = starts[:, None] + np.arange(-config.n_in, 0)[None, :]
    if kind == "forecaster":
        x = torch.from_numpy(x_all[hist])  # [B, n_in, N, F]
        b = x.shape[0]
        x = x.permute(0, 2, 1, 3).reshape(b * n, config.n_in, -1)
        return model(x, torch.arange(n).repeat(b)).view(b, n, config.n_out).permute(0, 2, 1)
    x = torch.from_numpy(x_all[hist][..., :2]).reshape(len(starts), config.n_in, 2 * n)
    return model(x)


def _loss(
    kind: str, model: Any, config: TrainConfig, x_all: np.ndarray, y_all: np.ndarray,
    starts: np.ndarray,
) -> Any:  # fmt: skip
    """Masked MAE of the windows whose first target is at ``starts`` (normalised units)."""
    torch = _torch()
    targ = starts[:, None] + np.arange(config.n_out)[None, :]
    y = torch.from_numpy(y_all[targ])  # [B, n_out, N]
    pred = _forward(kind, model, config, x_all, starts)
    valid = ~torch.isnan(y)
    return (pred - torch.nan_to_num(y)).abs()[valid].mean()


def _validation_mae(
    kind: str, model: Any, config: TrainConfig, x_all: np.ndarray, y_all: np.ndarray,
    split: Split,
) -> float:  # fmt: skip
    torch = _torch()
    val_starts = window_starts(split.train_end, split.val_end, config.n_in, config.n_out)
    with torch.no_grad():
        losses = [
            float(_loss(kind, model, config, x_all, y_all, val_starts[i : i + 64]))
            * len(val_starts[i : i + 64])
            for i in range(0, len(val_starts), 64)
        ]
    return sum(losses) / max(1, len(val_starts))


def _fit(
    kind: str, config: TrainConfig, x_all: np.ndarray, y_all: np.ndarray, split: Split,
    progress: bool, label: str,
) -> tuple[Any, int, float]:  # fmt: skip
    """One model from ``config.seed``: (model at its best validation, epochs run, that MAE)."""
    torch = _torch()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n = y_all.shape[1]
    model = (
        build_forecaster(n, x_all.shape[2], config)
        if kind == "forecaster"
        else build_fc_lstm(n, config)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Halve the step size when validation stops improving, before early stopping gives up.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=0.5, patience=max(1, config.patience // 2 - 1)
    )
    train_starts = window_starts(config.n_in, split.train_end, config.n_in, config.n_out)
    best, best_state, bad, epochs_run = math.inf, None, 0, 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, desc=label, unit="epoch")
    for epoch in range(config.epochs):
        epochs_run = epoch + 1
        model.train()
        order = rng.permutation(train_starts)
        if config.max_train_windows:
            order = order[: config.max_train_windows]
        for i in range(0, len(order), config.batch_windows):
            optimiser.zero_grad()
            loss = _loss(kind, model, config, x_all, y_all, order[i : i + config.batch_windows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
        model.eval()
        val = _validation_mae(kind, model, config, x_all, y_all, split)
        scheduler.step(val)
        if bar is not None:
            bar.set_postfix(val_mae=f"{val:.4f}")
            bar.update()
        if val < best - 1e-4:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, epochs_run, best


def predict(trained: Trained, series: SeriesSet, starts: np.ndarray) -> np.ndarray:
    """Forecasts ``[W, n_out, N]`` in the data's units for windows starting at ``starts``."""
    torch = _torch()
    config = trained.config
    x_all, _ = trained.features(series)
    n = series.values.shape[1]
    with torch.no_grad():
        out = [
            _forward(trained.kind, trained.model, config, x_all, starts[i : i + 64]).numpy()
            for i in range(0, len(starts), 64)
        ]
    normed = np.concatenate(out) if out else np.zeros((0, config.n_out, n), np.float32)
    return normed * trained.std + trained.mean
