"""Scene analytics of one frame: lanes, ground positions, motion, line crossings, aggregates.

Small stages over the frame's :class:`~rsu.detections.Detections`, in order:
lane and ground position of each anchor -> speed and heading per track -> line crossings ->
per-interval lane/line aggregates (a ``lane_aggregates`` message when an interval closes).
"""

from __future__ import annotations

from common.schemas import LaneAggregates
from rsu.aggregates import LaneAggregator
from rsu.config import RsuConfig
from rsu.detections import Detections
from rsu.lines import LineCounter, LineSpec
from rsu.motion import MotionEstimator
from rsu.scene import GroundProjector, LaneMap, SceneConfig


class SceneAnalytics:
    def __init__(self, scene: SceneConfig | None, config: RsuConfig, run_id: str) -> None:
        scene = scene or SceneConfig(name="unnamed")
        self.lanes = LaneMap(scene.lanes)
        self.projector = GroundProjector(scene.calibration) if scene.calibration else None
        self.motion = MotionEstimator(config.motion)
        self.lines = LineCounter(
            [
                LineSpec(line.id, line.points[0], line.points[1], line.lane_id)
                for line in scene.lines
            ],
            margin=config.crossing_margin,
            min_frames=config.crossing_min_frames,
        )
        header = {"rsu_id": config.rsu_id, "camera_id": config.camera_id, "run_id": run_id}
        self.aggregator = LaneAggregator(scene, config.aggregate_interval_s, header, self.projector)

    def __call__(
        self, detections: Detections, t_ms: int, frame_size: tuple[int, int]
    ) -> LaneAggregates | None:
        """Annotates ``detections`` in place; returns aggregates of an interval just closed."""
        feet = detections.bottom_centres()
        detections.lane_id = self.lanes.assign(feet)
        if self.projector is not None:
            detections.ground_xy = self.projector.to_ground(feet)
            detections.geo = self.projector.to_geo(detections.ground_xy)
        motion = self.motion.update(detections, t_ms)
        detections.speed_mps, detections.heading_deg = motion.speed_mps, motion.heading_deg
        crossings = self.lines.update(detections, frame_size)
        if not self.aggregator.active:
            return None
        return self.aggregator.update(t_ms, detections, motion, crossings)

    def flush(self, frame_ms: float) -> LaneAggregates | None:
        return self.aggregator.flush(frame_ms) if self.aggregator.active else None
