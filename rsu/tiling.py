"""Tiled (sliced) detection for small, far or top-down road users.

The detector runs on the whole frame and on a grid of overlapping crops; each crop is
letterboxed to the model's input on its own, so small vehicles are seen larger.  Boxes from
the crops are shifted back into the frame, and everything is merged with the same grouped NMS
as one pass would use.  Costs one extra inference per tile.

In the RSU (``detector.tiles: 2x2``), the tiled detector stands in for the plain one.  Its
letterbox, inference and decode of all passes are timed as the pipeline's inference stage.
"""

from __future__ import annotations

import numpy as np

from rsu.detections import Detections
from rsu.detector import Detector, batched_nms


def tile_windows(
    width: int, height: int, cols: int, rows: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of ``cols`` x ``rows`` crops covering the frame, overlapping."""
    tile_w = int(np.ceil(width / (cols - (cols - 1) * overlap)))
    tile_h = int(np.ceil(height / (rows - (rows - 1) * overlap)))
    xs = np.linspace(0, width - tile_w, cols).round().astype(int) if cols > 1 else [0]
    ys = np.linspace(0, height - tile_h, rows).round().astype(int) if rows > 1 else [0]
    return [(int(x), int(y), int(x) + tile_w, int(y) + tile_h) for y in ys for x in xs]


class TiledDetector:
    def __init__(
        self, detector: Detector, cols: int, rows: int, overlap: float = 0.2, iou: float = 0.5
    ) -> None:
        """``iou``: merge threshold across passes (a box cut by a tile edge still overlaps
        the whole-frame box of the same vehicle by about this much)."""
        if cols < 1 or rows < 1 or not 0 <= overlap < 1:
            raise ValueError("tiles need cols, rows >= 1 and 0 <= overlap < 1")
        self.detector = detector
        self.cols, self.rows, self.overlap, self.iou = cols, rows, overlap, iou
        self.imgsz = detector.imgsz
        self.input_hw = detector.input_hw
        self.config = detector.config
        self.model_path = detector.model_path
        self.class_names = detector.class_names

    # The pipeline's stage interface: the whole tiled pass is one "inference".
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, None]:
        return image, None

    def infer(self, image: np.ndarray) -> Detections:
        return self.detect(image)

    def postprocess(self, output: Detections, box: None, shape: tuple[int, ...]) -> Detections:
        return output

    def passes_confidence(self, detections: Detections) -> np.ndarray:
        return self.detector.passes_confidence(detections)

    def warmup(self) -> float:
        return self.detector.warmup() * (1 + self.cols * self.rows)

    def detect(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        parts = [self.detector.detect(image)]
        for x0, y0, x1, y1 in tile_windows(width, height, self.cols, self.rows, self.overlap):
            found = self.detector.detect(np.ascontiguousarray(image[y0:y1, x0:x1]))
            found.xyxy = found.xyxy + np.array([x0, y0, x0, y0], np.float32)
            parts.append(found)
        merged = Detections.concatenate([p for p in parts if len(p)])
        if not len(merged):
            return merged
        rows = np.array(
            [int(np.flatnonzero(self.detector.class_names == c)[0]) for c in merged.class_name]
        )
        keep = batched_nms(merged.xyxy, merged.confidence, self.detector.nms_group[rows], self.iou)
        return merged.subset(keep)
