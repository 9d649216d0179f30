"""Frame sources.  A replay source yields every frame (or every ``stride``-th) of a file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (frames, counting from 0)
    image: np.ndarray  # BGR, H x W x 3
    offset_ms: float  # media time of the frame from the start of the source


class VideoFileSource:
    def __init__(self, path: Path, stride: int = 1, max_frames: int | None = None) -> None:
        if stride < 1:
            raise SourceError(f"stride must be >= 1, got {stride}")
        if not path.is_file():
            raise SourceError(f"video file not found: {path}")
        self.path = path
        self.stride = stride
        self.max_frames = max_frames
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise SourceError(f"cannot open video {path}: not a readable video file")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ok, first = self._capture.read()
        if not ok or first is None:
            raise SourceError(f"cannot decode any frame of {path}")
        self._first: np.ndarray | None = first

    @property
    def expected_frames(self) -> int:
        total = -(-self.frame_count // self.stride) if self.frame_count else 0
        return min(total, self.max_frames) if self.max_frames else total

    def __iter__(self) -> Iterator[Frame]:
        index, emitted = 0, 0
        while self.max_frames is None or emitted < self.max_frames:
            if self._first is not None:
                image, self._first = self._first, None
            else:
                # grab() skips decoding-to-BGR cost for frames the stride drops.
                if index % self.stride != 0:
                    if not self._capture.grab():
                        break
                    index += 1
                    continue
                ok, image = self._capture.read()
                if not ok or image is None:
                    break
            if index % self.stride == 0:
                yield Frame(index=index, image=image, offset_ms=index * 1000.0 / self.fps)
                emitted += 1
            index += 1

    def close(self) -> None:
        self._capture.release()
