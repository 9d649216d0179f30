"""Per-track motion: smoothed ground speed and heading, stationary and parked flags.

Speed is the displacement of the track's ground position over a short window (not frame to
frame, where box jitter dominates), smoothed exponentially.  Heading is reported only while
moving: the direction of a standing vehicle's jitter means nothing.  Without a calibration
there is no speed, but a track is still stationary when its anchor moves less than a small
share of its box height per second.  A track stationary for longer than ``parked_after_s``
is parked: kept out of queues.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from common.config import StrictModel
from rsu.detections import Detections


class MotionConfig(StrictModel):
    window_s: float = Field(1.0, gt=0, description="span over which speed is measured")
    smoothing: float = Field(0.3, gt=0, le=1, description="weight of the newest speed estimate")
    stationary_mps: float = Field(0.5, ge=0, description="slower than this is standing still")
    stationary_px_per_s: float = Field(
        0.05, ge=0, description="without calibration: standing still below this box heights/s"
    )
    parked_after_s: float = Field(
        120.0, gt=0, description="standing still this long is parked, not queued"
    )


@dataclass
class _History:
    points: deque[tuple[float, float, float]] = field(default_factory=deque)  # t_s, x, y
    pixels: deque[tuple[float, float, float, float]] = field(default_factory=deque)  # +height
    speed: float | None = None
    still_since: float | None = None
    last_seen: float = 0.0


@dataclass
class Motion:
    speed_mps: np.ndarray  # (N,) float, NaN when unknown
    heading_deg: np.ndarray  # (N,) float, NaN when unknown or standing
    stationary: np.ndarray  # (N,) bool
    parked: np.ndarray  # (N,) bool


class MotionEstimator:
    def __init__(self, config: MotionConfig, forget_after_s: float = 10.0) -> None:
        self.config = config
        self.forget_after_s = forget_after_s
        self._tracks: dict[int, _History] = {}
        self._last_forget = 0.0

    def update(self, detections: Detections, t_ms: int) -> Motion:
        cfg = self.config
        n = len(detections)
        if detections.track_id is None or not n:
            return Motion(
                np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool)
            )
        # Plain lists in and out: the loop reads and writes single values.
        speeds, headings = [math.nan] * n, [math.nan] * n
        stationary, parked = [False] * n, [False] * n
        t = t_ms / 1000.0
        anchors = detections.bottom_centres().tolist()
        heights = (detections.xyxy[:, 3] - detections.xyxy[:, 1]).tolist()
        ground = detections.ground_xy.tolist() if detections.ground_xy is not None else None
        for i, track in enumerate(detections.track_id.tolist()):
            h = self._tracks.get(track)
            if h is None:
                h = self._tracks[track] = _History()
            h.last_seen = t
            still: bool | None = None
            if ground is not None:
                x, y = ground[i]
                h.points.append((t, x, y))
                while h.points and t - h.points[0][0] > cfg.window_s:
                    h.points.popleft()
                t0, x0, y0 = h.points[0]
                if t - t0 >= cfg.window_s / 2:
                    dx, dy = x - x0, y - y0
                    estimate = math.hypot(dx, dy) / (t - t0)
                    h.speed = (
                        estimate
                        if h.speed is None
                        else cfg.smoothing * estimate + (1 - cfg.smoothing) * h.speed
                    )
                    speeds[i] = h.speed
                    still = h.speed < cfg.stationary_mps
                    if not still:
                        # Clockwise from north (+y), as in the V2X messages.
                        headings[i] = math.degrees(math.atan2(dx, dy)) % 360.0
            else:
                (px, py), height = anchors[i], heights[i]
                h.pixels.append((t, px, py, height))
                while h.pixels and t - h.pixels[0][0] > cfg.window_s:
                    h.pixels.popleft()
                t0, x0, y0, _ = h.pixels[0]
                if t - t0 >= cfg.window_s / 2:
                    rate = math.hypot(px - x0, py - y0) / max(height, 1.0) / (t - t0)
                    still = rate < cfg.stationary_px_per_s
            if still:
                h.still_since = h.still_since if h.still_since is not None else t
                stationary[i] = True
                parked[i] = t - h.still_since >= cfg.parked_after_s
            elif still is False:
                h.still_since = None
        motion = Motion(
            np.array(speeds), np.array(headings), np.array(stationary), np.array(parked)
        )
        if t - self._last_forget > 1.0:
            self._last_forget = t
            for track in [
                k for k, v in self._tracks.items() if t - v.last_seen > self.forget_after_s
            ]:
                del self._tracks[track]
        return motion
