"""Per-lane, per-line and per-zone aggregates over fixed intervals, published as
``lane_aggregates`` (zones: :mod:`rsu.zones`).

Intervals are aligned to the capture clock (``floor(t / interval) * interval``), so RSUs and
the center agree on bin edges.  Per lane and interval:

- ``counts``: road users that crossed any line while in the lane, each track counted once
  per lane (a vehicle crossing a counting line and then the stop line counts once);
- ``occupancy``: share of the interval's frames with a vehicle in the lane;
- ``mean_speed_mps``: mean speed of moving vehicles in the lane (calibrated scenes);
- ``queue_vehicles``: vehicles standing (not parked) in the lane at the interval's end, and
  ``queue_m``: how far back from the lane's stop line the queue reaches (calibrated scenes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import LineString, Point

from common.schemas import (
    VEHICLE_CLASSES,
    LaneAggregates,
    LaneInterval,
    LineInterval,
    RoadUserClass,
)
from rsu.detections import Detections
from rsu.lines import Crossing
from rsu.motion import Motion
from rsu.scene import CountingLine, GroundProjector, Lane, SceneConfig
from rsu.zones import ZoneWatcher

_VEHICLES = {c.value for c in VEHICLE_CLASSES}


def stop_line_serves(line: CountingLine, lane: Lane) -> bool:
    """A stop line with a lane serves that lane; without one, the lanes of its approach."""
    if line.lane_id is not None:
        return line.lane_id == lane.id
    return line.approach is None or line.approach == lane.approach


@dataclass
class _LaneAcc:
    frames: int = 0
    occupied: int = 0
    speed_sum: float = 0.0
    speed_n: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    queue_vehicles: int = 0
    queue_m: float | None = None


class LaneAggregator:
    def __init__(
        self,
        scene: SceneConfig,
        interval_s: float,
        header: dict[str, str],
        projector: GroundProjector | None = None,
    ) -> None:
        self.scene = scene
        self.interval_ms = int(interval_s * 1000)
        self.header = header  # rsu_id, camera_id, run_id
        self.seq = 0
        self._start: int | None = None
        self._first_t: int | None = None  # first and last frame of the open interval
        self._last_t: int | None = None
        self._frames = 0
        self._lanes: dict[str, _LaneAcc] = {}
        self._lines: dict[str, dict[bool, dict[str, int]]] = {}
        self._counted: dict[tuple[str, int], int] = {}  # (lane, track) -> time counted
        self._approach = {lane.id: lane.approach for lane in scene.lanes}
        self.zones = ZoneWatcher(scene.zones)
        # Ground geometry of each lane's stop line, to measure queues in metres.
        self._stop_lines: dict[str, LineString] = {}
        if projector is not None:
            for line in scene.lines:
                if line.kind == "stop":
                    ground = projector.to_ground(np.asarray(line.points, np.float64))
                    for lane in scene.lanes:
                        if stop_line_serves(line, lane):
                            self._stop_lines.setdefault(lane.id, LineString(ground))
        self._reset()

    @property
    def active(self) -> bool:
        return bool(self.scene.lanes or self.scene.lines or self.scene.zones)

    def _reset(self) -> None:
        self._lanes = {lane.id: _LaneAcc() for lane in self.scene.lanes}
        self._lines = {line.id: {True: {}, False: {}} for line in self.scene.lines}
        self.zones.reset()

    def update(
        self, t_ms: int, detections: Detections, motion: Motion, crossings: list[Crossing]
    ) -> LaneAggregates | None:
        """Account one frame; returns the aggregates of an interval this frame closed."""
        closed = None
        if self._start is not None and t_ms >= self._start + self.interval_ms:
            closed = self._emit(self._start, self._observed_ms(frame_ms=None))
        if closed is not None or self._start is None:
            self._start = t_ms // self.interval_ms * self.interval_ms
            self._first_t, self._frames = t_ms, 0
        self._last_t = t_ms
        self._frames += 1
        self._account(t_ms, detections, motion, crossings)
        return closed

    def flush(self, frame_ms: float) -> LaneAggregates | None:
        """The last, partial interval (end of a replay or shutdown)."""
        if self._start is None:
            return None
        message = self._emit(self._start, self._observed_ms(frame_ms))
        self._start = None
        return message

    def _observed_ms(self, frame_ms: float | None) -> float:
        """First to last frame of the interval, plus one frame period."""
        assert self._first_t is not None and self._last_t is not None
        span = self._last_t - self._first_t
        if frame_ms is None:  # the mean frame gap within the interval
            frame_ms = span / (self._frames - 1) if self._frames > 1 else 0.0
        return min(span + frame_ms, self.interval_ms)

    def _account(
        self, t_ms: int, detections: Detections, motion: Motion, crossings: list[Crossing]
    ) -> None:
        lanes = detections.lane_id or [None] * len(detections)
        is_vehicle = np.array([c in _VEHICLES for c in detections.class_name], bool)
        occupied: set[str] = set()
        queue: dict[str, list[int]] = {}
        for i, lane in enumerate(lanes):
            if lane is None or lane not in self._lanes or not is_vehicle[i]:
                continue
            occupied.add(lane)
            acc = self._lanes[lane]
            speed = motion.speed_mps[i] if len(motion.speed_mps) else np.nan
            if not np.isnan(speed) and not motion.stationary[i]:
                acc.speed_sum += float(speed)
                acc.speed_n += 1
            if motion.stationary[i] and not motion.parked[i]:
                queue.setdefault(lane, []).append(i)
        for lane_id, acc in self._lanes.items():
            acc.frames += 1
            acc.occupied += lane_id in occupied
            members = queue.get(lane_id, [])
            acc.queue_vehicles = len(members)  # the state at the interval's last frame
            acc.queue_m = self._queue_length(lane_id, members, detections)
        self.zones.update(t_ms, detections, motion)
        for crossing in crossings:
            by_class = self._lines[crossing.line_id][crossing.positive]
            by_class[crossing.category] = by_class.get(crossing.category, 0) + 1
            lane = crossing.lane_id
            if lane in self._lanes and (lane, crossing.track_id) not in self._counted:
                self._counted[(lane, crossing.track_id)] = t_ms
                counts = self._lanes[lane].counts
                counts[crossing.category] = counts.get(crossing.category, 0) + 1
        if len(self._counted) > 10_000:  # bounded memory: forget counts older than 10 min
            horizon = t_ms - 600_000
            self._counted = {k: v for k, v in self._counted.items() if v >= horizon}

    def _queue_length(self, lane: str, members: list[int], detections: Detections) -> float | None:
        stop = self._stop_lines.get(lane)
        if stop is None or detections.ground_xy is None:
            return None
        if not members:
            return 0.0
        return round(max(stop.distance(Point(detections.ground_xy[i])) for i in members), 1)

    def _emit(self, start_ms: int, observed_ms: float) -> LaneAggregates:
        lanes = []
        for lane_id, acc in self._lanes.items():
            lanes.append(
                LaneInterval(
                    lane_id=lane_id,
                    approach=self._approach.get(lane_id),
                    counts={RoadUserClass(k): v for k, v in sorted(acc.counts.items())},
                    mean_speed_mps=round(acc.speed_sum / acc.speed_n, 2) if acc.speed_n else None,
                    occupancy=round(acc.occupied / acc.frames, 3) if acc.frames else None,
                    queue_vehicles=acc.queue_vehicles,
                    queue_m=acc.queue_m,
                )
            )
        lines = [
            LineInterval(
                line_id=line_id,
                positive={RoadUserClass(k): v for k, v in sorted(dirs[True].items())},
                negative={RoadUserClass(k): v for k, v in sorted(dirs[False].items())},
            )
            for line_id, dirs in self._lines.items()
        ]
        message = LaneAggregates(
            **self.header,
            seq=self.seq,
            interval_start_ms=start_ms,
            interval_s=self.interval_ms / 1000.0,
            observed_s=round(observed_ms / 1000.0, 3),
            lanes=lanes,
            lines=lines,
            zones=self.zones.intervals(),
        )
        self.seq += 1
        self._reset()
        return message
