"""The LSTM forecaster, and FC-LSTM as a baseline (PyTorch, for training; ONNX for serving).

**Forecaster** (one model for every detector):

- Per detector and step, the inputs are:
  - the reading, normalised by the detector's training mean and spread (0 where missing),
  - the missing flag,
  - time of day as a sine/cosine pair, and day of week too when the training data spans
    two weeks or more,
  - with an adjacency matrix, the weighted mean of the neighbours' normalised readings.
- A learned per-detector embedding is appended to every step.
- An LSTM reads the ``n_in`` steps. A small MLP head maps its last state (and the
  embedding) to the ``n_out`` steps ahead, in normalised units.
- With ``residual``, the head predicts the change from the last reading instead. On the
  Los-loop slice that was worse: 3.67 against 3.50 average MAE (BENCHMARKS.md).
- Trained with masked MAE: a missing target contributes nothing.

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
    hidden: int = 64
    embedding: int = 8
    epochs: int = 30
    patience: int = 4
    batch_windows: int = 16
    lr: float = 2e-3
    seed: int = 7
    max_train_windows: int | None = None  # sample per epoch (speed); None = all
    residual: bool = False  # predict the change from the last reading
    # Day-of-week features; None: only when the training rows span two weeks or more (with
    # less, a test day may be a weekday the model never saw, and the feature misleads it).
    weekday: bool | None = None


def features(
    series: SeriesSet,
    adjacency: np.ndarray | None,
    mean: np.ndarray,
    std: np.ndarray,
    weekday: bool = True,
):
    """``[T, N, F]`` step features and the normalised values ``[T, N]`` (NaN kept)."""
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
    return np.concatenate(parts, axis=2).astype(np.float32), norm.astype(np.float32)


def build_forecaster(n_detectors: int, n_features: int, config: TrainConfig) -> Any:
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

    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": asdict(self.config),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "adjacency": None if self.adjacency is None else self.adjacency.tolist(),
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
    """Fit on the training rows, early-stop on the validation rows' masked MAE."""
    torch = _torch()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.weekday is None:
        config = replace(config, weekday=split.train_end * series.interval_s >= 14 * 86_400)
    mean, std = normaliser(series, split)
    x_all, y_all = features(series, adjacency, mean, std, bool(config.weekday))
    n = series.values.shape[1]
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
    val_starts = window_starts(split.train_end, split.val_end, config.n_in, config.n_out)
    detectors = torch.arange(n)

    def batch_loss(starts: np.ndarray) -> Any:
        hist = starts[:, None] + np.arange(-config.n_in, 0)[None, :]
        targ = starts[:, None] + np.arange(config.n_out)[None, :]
        y = torch.from_numpy(y_all[targ])  # [B, n_out, N]
        if kind == "forecaster":
            x = torch.from_numpy(x_all[hist])  # [B, n_in, N, F]
            b = x.shape[0]
            x = x.permute(0, 2, 1, 3).reshape(b * n, config.n_in, -1)
            pred = model(x, detectors.repeat(b)).view(b, n, config.n_out).permute(0, 2, 1)
        else:
            x = torch.from_numpy(x_all[hist][..., :2]).reshape(len(starts), config.n_in, 2 * n)
            pred = model(x)
        valid = ~torch.isnan(y)
        return (pred - torch.nan_to_num(y)).abs()[valid].mean()

    best, best_state, bad, epochs_run = math.inf, None, 0, 0
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, desc=f"train {kind}", unit="epoch")
    for epoch in range(config.epochs):
        epochs_run = epoch + 1
        model.train()
        order = rng.permutation(train_starts)
        if config.max_train_windows:
            order = order[: config.max_train_windows]
        for i in range(0, len(order), config.batch_windows):
            optimiser.zero_grad()
            loss = batch_loss(order[i : i + config.batch_windows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
        model.eval()
        with torch.no_grad():
            losses = [
                float(batch_loss(val_starts[i : i + 64])) * len(val_starts[i : i + 64])
                for i in range(0, len(val_starts), 64)
            ]
        val = sum(losses) / max(1, len(val_starts))
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
    return Trained(
        kind, model, config, mean, std, adjacency, epochs_run,
        time.perf_counter() - started, best,
    )  # fmt: skip


def predict(trained: Trained, series: SeriesSet, starts: np.ndarray) -> np.ndarray:
    """Forecasts ``[W, n_out, N]`` in the data's units for windows starting at ``starts``."""
    torch = _torch()
    config = trained.config
    x_all, _ = features(series, trained.adjacency, trained.mean, trained.std, bool(config.weekday))
    n = series.values.shape[1]
    out = []
    with torch.no_grad():
        for i in range(0, len(starts), 64):
            chunk = starts[i : i + 64]
            hist = chunk[:, None] + np.arange(-config.n_in, 0)[None, :]
            if trained.kind == "forecaster":
                x = torch.from_numpy(x_all[hist])
                b = x.shape[0]
                x = x.permute(0, 2, 1, 3).reshape(b * n, config.n_in, -1)
                pred = trained.model(x, torch.arange(n).repeat(b)).view(b, n, config.n_out)
                pred = pred.permute(0, 2, 1)
            else:
                x = torch.from_numpy(x_all[hist][..., :2]).reshape(len(chunk), config.n_in, 2 * n)
                pred = trained.model(x)
            out.append(pred.numpy())
    normed = np.concatenate(out) if out else np.zeros((0, config.n_out, n), np.float32)
    return normed * trained.std + trained.mean
