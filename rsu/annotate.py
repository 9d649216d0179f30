"""Annotated video of a replay: boxes with track ids, lanes, lines and live counts.

Drawn after the frame's message is published, outside the timed pipeline.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from common.frame_codec import FrameView
from common.schemas import FrameObjects
from rsu.scene import SceneConfig

AnyFrame = FrameView | FrameObjects

CLASS_COLOURS = {
    "car": (0, 200, 0), "truck": (0, 140, 255), "bus": (255, 120, 0),
    "motorcycle": (255, 0, 255), "bicycle": (255, 255, 0), "person": (0, 0, 255),
}  # fmt: skip
FONT = cv2.FONT_HERSHEY_SIMPLEX


class AnnotationError(RuntimeError):
    pass


class Annotator:
    def __init__(self, path: Path, fps: float, size: tuple[int, int], scene: SceneConfig) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AnnotationError(f"cannot create {path.parent}: {exc.strerror}") from None
        self.path = path
        self.scene = scene
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise AnnotationError(f"cannot write video {path}")
        self.frames = 0

    def draw(self, image: np.ndarray, message: AnyFrame, line_totals: dict) -> None:
        canvas = image.copy()
        for lane in self.scene.lanes:
            pts = np.round(np.asarray(lane.polygon)).astype(np.int32)
            cv2.polylines(canvas, [pts], True, (200, 200, 200), 1, cv2.LINE_AA)
        for line in self.scene.lines:
            p1, p2 = (tuple(int(v) for v in p) for p in line.points)
            cv2.line(canvas, p1, p2, (0, 0, 255) if line.kind == "stop" else (255, 255, 255), 2)
        for obj in message.objects:
            x1, y1, x2, y2 = (int(v) for v in obj.bbox)
            colour = CLASS_COLOURS.get(obj.category.value, (255, 255, 255))
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
            label = f"#{obj.track_id} {obj.category.value}" if obj.track_id else obj.category.value
            if obj.speed_mps is not None:
                label += f" {obj.speed_mps * 3.6:.0f}km/h"
            cv2.putText(canvas, label, (x1, max(y1 - 3, 8)), FONT, 0.35, colour, 1, cv2.LINE_AA)
        self._panel(canvas, message, line_totals)
        self.writer.write(canvas)
        self.frames += 1

    def _panel(self, canvas: np.ndarray, message: AnyFrame, line_totals: dict) -> None:
        per_line: dict[str, dict[bool, int]] = defaultdict(lambda: {True: 0, False: 0})
        for (line_id, positive, _category), n in line_totals.items():
            per_line[line_id][positive] += n
        rows = [f"frame {message.seq}  objects {len(message.objects)}"]
        rows += [f"{line} +{d[True]} -{d[False]}" for line, d in sorted(per_line.items())]
        height = 16 * len(rows) + 8
        cv2.rectangle(canvas, (0, 0), (230, height), (0, 0, 0), -1)
        for k, text in enumerate(rows):
            cv2.putText(canvas, text, (6, 16 + 16 * k), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)

    def close(self) -> None:
        self.writer.release()
