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
    geo: np.ndarray | None = None  # (N, 2) float64 lat, lon, once georeferenced
    speed_mps: np.ndarray | None = None  # (N,) float64, NaN where unknown
    heading_deg: np.ndarray | None = None  # (N,) float64, NaN where unknown

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_name=np.zeros(0, object),
        )

    def subset(self, index: np.ndarray) -> Detections:
        """The rows ``index`` (integer indices or a boolean mask), in that order."""
        index = np.flatnonzero(index) if index.dtype == bool else index
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_name=self.class_name[index],
            track_id=self.track_id[index] if self.track_id is not None else None,
            lane_id=[self.lane_id[i] for i in index.tolist()] if self.lane_id else [],
            ground_xy=self.ground_xy[index] if self.ground_xy is not None else None,
            geo=self.geo[index] if self.geo is not None else None,
            speed_mps=self.speed_mps[index] if self.speed_mps is not None else None,
            heading_deg=self.heading_deg[index] if self.heading_deg is not None else None,
        )

    @classmethod
    def concatenate(cls, parts: list[Detections]) -> Detections:
        """Rows of all ``parts``; per-row fields are kept only if every part has them."""
        if not parts:
            return cls.empty()

        def joined(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        lanes = [lane for p in parts for lane in p.lane_id]
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_name=np.concatenate([p.class_name for p in parts]),
            track_id=joined("track_id"),
            lane_id=lanes if all(len(p.lane_id) == len(p) for p in parts) else [],
            ground_xy=joined("ground_xy"),
            geo=joined("geo"),
            speed_mps=joined("speed_mps"),
            heading_deg=joined("heading_deg"),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def bottom_centres(self) -> np.ndarray:
        """Where a road user touches the ground, as seen by the camera: (N, 2)."""
        return np.stack(((self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, self.xyxy[:, 3]), axis=1)

    def counts_by_class(self) -> dict[str, int]:
        names, counts = np.unique(self.class_name.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=False)}
