"""Frame sources: a replay yields every frame (or every ``stride``-th) of a file; a live
source keeps only the newest frame of a camera or stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from common.config import StrictModel


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (frames, counting from 0)
    image: np.ndarray  # BGR, H x W x 3
    offset_ms: float  # media time of the frame from the start of the source


class VideoFileSource:
    """Every frame of a file (or every ``stride``-th).

    A frame that fails to decode is skipped and counted (``frames_skipped``): past a damaged
    stretch, decoding usually resumes, so the rest of the clip is not lost.  Reading stops at
    the end of the file, or after ``max_consecutive_failures`` bad reads in a row.
    """

    connected = True  # a file does not disconnect; the attributes match LiveSource's
    last_error: str | None = None

    def __init__(
        self,
        path: Path,
        stride: int = 1,
        max_frames: int | None = None,
        max_consecutive_failures: int = 50,
    ) -> None:
        if stride < 1:
            raise SourceError(f"stride must be >= 1, got {stride}")
        if not path.is_file():
            raise SourceError(f"video file not found: {path}")
        self.path = path
        self.stride = stride
        self.max_frames = max_frames
        self.max_consecutive_failures = max_consecutive_failures
        self.frames_skipped = 0
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
        index, emitted, failures = 0, 0, 0
        while self.max_frames is None or emitted < self.max_frames:
            if self._first is not None:
                image, self._first = self._first, None
            else:
                # grab() skips decoding-to-BGR cost for frames the stride drops.
                if index % self.stride != 0:
                    if not self._capture.grab() and self._at_end(index):
                        break
                    index += 1
                    continue
                ok, image = self._capture.read()
                if not ok or image is None:
                    if self._at_end(index):
                        break
                    failures += 1
                    self.frames_skipped += 1
                    if failures >= self.max_consecutive_failures:
                        self.last_error = (
                            f"{self.path.name}: {failures} frames in a row failed to decode "
                            f"at frame {index}; giving up"
                        )
                        break
                    index += 1
                    continue
                failures = 0
            if index % self.stride == 0:
                yield Frame(index=index, image=image, offset_ms=index * 1000.0 / self.fps)
                emitted += 1
            index += 1

    def _at_end(self, index: int) -> bool:
        """A failed read is the end of the file, not damage, once the frames are used up."""
        return not self.frame_count or index >= self.frame_count

    def close(self) -> None:
        self._capture.release()


class SourceConfig(StrictModel):
    uri: str = Field(
        description="rtsp:// or http(s):// stream, /dev/videoN or a camera index (V4L2), "
        "'gst: <pipeline> ! appsink' (GStreamer, e.g. nvv4l2decoder on Jetson), or a file"
    )
    timeout_s: float = Field(5.0, gt=0, description="open/read timeout of network streams")
    reconnect_initial_s: float = Field(0.5, gt=0, description="first wait before reconnecting")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest wait between reconnects")
    failed_reads_to_reconnect: int = Field(
        3, ge=1, description="consecutive failed or corrupt reads that mean the stream is lost"
    )


def open_capture(config: SourceConfig) -> cv2.VideoCapture:
    uri = config.uri.strip()
    if uri.startswith("gst:"):
        return cv2.VideoCapture(uri[4:].strip(), cv2.CAP_GSTREAMER)
    if uri.isdigit():
        return cv2.VideoCapture(int(uri), cv2.CAP_V4L2)
    if uri.startswith("/dev/video"):
        return cv2.VideoCapture(uri, cv2.CAP_V4L2)
    timeout = int(config.timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout]
    return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)


@dataclass(frozen=True)
class LiveFrame(Frame):
    captured_at_ms: int = 0  # wall clock when the frame was read
    decode_ms: float = 0.0


class LiveSource:
    """A live camera: a reader thread keeps only the newest frame.

    The pipeline takes frames with :meth:`read`; a frame replaced before it was taken counts
    in ``frames_skipped``, so a slow pipeline lowers its detection rate instead of queueing.
    A lost stream (``failed_reads_to_reconnect`` bad reads in a row, or a failed open) is
    reopened with exponential back-off; ``connected`` and ``last_error`` say how it is.
    """

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.connected = False
        self.last_error: str | None = None
        self.frames_read = 0
        self.frames_skipped = 0
        self.corrupt_reads = 0
        self.reconnects = 0
        self.fps = 0.0
        self._cond = threading.Condition()
        self._latest: LiveFrame | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-source", daemon=True)
        self._thread.start()

    def read(self, timeout_s: float) -> LiveFrame | None:
        """The newest frame not yet taken, waiting up to ``timeout_s``; None if none came."""
        with self._cond:
            if self._latest is None:
                self._cond.wait(timeout_s)
            frame, self._latest = self._latest, None
            return frame

    def _run(self) -> None:
        backoff = self.config.reconnect_initial_s
        ever_connected = False
        index = 0
        while not self._stop.is_set():
            capture = open_capture(self.config)
            if not capture.isOpened():
                capture.release()
                self._lost(f"cannot open {self.config.uri}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            if ever_connected:
                self.reconnects += 1
            ever_connected, self.connected, self.last_error = True, True, None
            backoff = self.config.reconnect_initial_s
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and 0 < fps < 1000 else 0.0
            failures = 0
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, image = capture.read()
                if not ok or image is None or image.size == 0:
                    failures += 1
                    self.corrupt_reads += 1
                    if failures >= self.config.failed_reads_to_reconnect:
                        break
                    continue
                failures = 0
                frame = LiveFrame(
                    index=index,
                    image=image,
                    offset_ms=0.0,
                    captured_at_ms=int(time.time() * 1000),
                    decode_ms=(time.perf_counter() - t0) * 1000,
                )
                index += 1
                self.frames_read += 1
                with self._cond:
                    if self._latest is not None:
                        self.frames_skipped += 1
                    self._latest = frame
                    self._cond.notify()
            capture.release()
            if not self._stop.is_set():
                self._lost(f"stream {self.config.uri} lost after {failures} failed reads")

    def _lost(self, reason: str) -> None:
        self.connected = False
        self.last_error = reason

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.config.timeout_s + 2)
