"""The data container that flows through the RSU's stages (one per frame)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """Boxes of one frame; every array has one row per object."""

    xyxy: np.ndarray  # (N, 4) float32, pixels in the full frame
    confidence: np.ndarray  # (N,) float32
    class_name: np.ndarray  # (N,) object (str): our road-user class names
    track_id: np.ndarray | None = None  # (N,) int64, once tracked
    lane_id: list[str | None] = field(default_factory=list)
    ground_xy: np.ndarray | None = None  # (N, 2) float64 metres, once calibrated

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_name=np.zeros(0, object),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def bottom_centres(self) -> np.ndarray:
        """Where a road user touches the ground, as seen by the camera: (N, 2)."""
        return np.stack(((self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, self.xyxy[:, 3]), axis=1)

    def counts_by_class(self) -> dict[str, int]:
        names, counts = np.unique(self.class_name.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=False)}
