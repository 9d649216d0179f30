"""One camera's processing: frame -> detections -> scene analytics -> bus message.

Each stage is small and takes/returns the :class:`~rsu.detections.Detections` of the frame;
the pipeline times every stage and emits a health message every ``health_interval_s``.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from common.frame_codec import FrameView, GeoPositionView, GroundPositionView, PerceivedObjectView
from common.gc_policy import collect_due
from common.schemas import (
    SCHEMA_VERSION,
    LaneAggregates,
    LatencySummary,
    RoadUserClass,
    RsuHealth,
)
from rsu.analytics import SceneAnalytics
from rsu.config import RsuConfig
from rsu.detections import Detections
from rsu.detector import Detector
from rsu.publish_thread import AnyPublisher
from rsu.scene import SceneConfig
from rsu.source import Frame, LiveSource, VideoFileSource
from rsu.timing import StageTimer
from rsu.tracker import ByteTracker


def now_ms() -> int:
    return int(time.time() * 1000)


def _optional(values: np.ndarray | None, decimals: int, n: int) -> list[float | None]:
    """Rounded floats, None where unknown (NaN) or not measured at all."""
    if values is None:
        return [None] * n
    rounded = np.round(values.astype(np.float64), decimals).tolist()
    return [None if v != v else v for v in rounded]  # v != v: NaN


def _points(values: np.ndarray | None, decimals: int) -> list[list[float] | None] | None:
    """Rounded (N, 2) points, None for a point that is not finite (e.g. a foot above the
    horizon): JSON has no NaN, and the center would reject the whole frame."""
    if values is None:
        return None
    finite = np.isfinite(values).all(axis=1).tolist()
    rounded = np.round(values.astype(np.float64), decimals).tolist()
    return [point if ok else None for point, ok in zip(rounded, finite, strict=True)]


_CLASSES = {c.value: c for c in RoadUserClass}


def to_objects(detections: Detections) -> list[PerceivedObjectView]:
    """The frame's road users as the message carries them (msgspec structs: building 30 of
    them costs microseconds, where pydantic models cost a few hundred)."""
    n = len(detections)
    boxes = np.round(detections.xyxy.astype(np.float64), 1).tolist()
    confidences = np.round(detections.confidence.astype(np.float64), 3).tolist()
    ground = _points(detections.ground_xy, 2)
    geo = _points(detections.geo, 7)
    tracks = detections.track_id.tolist() if detections.track_id is not None else [None] * n
    lanes = detections.lane_id or [None] * n
    speeds = _optional(detections.speed_mps, 2, n)
    headings = _optional(detections.heading_deg, 1, n)
    objects = []
    for i in range(n):
        g = ground[i] if ground else None
        geo_i = geo[i] if geo else None
        heading = headings[i]
        objects.append(
            PerceivedObjectView(
                track_id=tracks[i],
                category=_CLASSES[detections.class_name[i]],
                confidence=confidences[i],
                bbox=tuple(boxes[i]),
                ground=GroundPositionView(x=g[0], y=g[1]) if g else None,
                geo=GeoPositionView(lat=geo_i[0], lon=geo_i[1]) if geo_i else None,
                speed_mps=speeds[i],
                heading_deg=heading % 360.0 if heading is not None else None,
                lane_id=lanes[i],
            )
        )
    return objects


class RsuPipeline:
    def __init__(
        self,
        config: RsuConfig,
        detector: Detector,
        publisher: AnyPublisher,
        scene: SceneConfig | None = None,
        run_id: str | None = None,
        tracker: ByteTracker | None = None,
        source: LiveSource | VideoFileSource | None = None,
    ) -> None:
        self.config = config
        self.detector = detector
        self.tracker = tracker
        self.source = source
        self.publisher = publisher
        self.run_id = run_id or str(now_ms())
        self.analytics = SceneAnalytics(scene, config, self.run_id)
        self.timer = StageTimer()
        self.frames = 0
        self.budget_violations = 0
        self.class_totals: dict[str, int] = {}
        self._health_seq = 0
        self._next_health = 0.0
        self._frame_times = deque[float](maxlen=120)  # wall times of recent frames, for fps

    def process(self, frame: Frame, captured_at_ms: int, decode_ms: float = 0.0) -> FrameView:
        timer = self.timer
        timer.record("decode", decode_ms)
        with timer.stage("preprocess"):
            blob, box = self.detector.preprocess(frame.image)
        with timer.stage("inference"):
            output = self.detector.infer(blob)
        with timer.stage("postprocess"):
            detections = self.detector.postprocess(output, box, frame.image.shape)
        if self.tracker is not None:
            with timer.stage("tracking"):
                confident = self.detector.passes_confidence(detections)
                detections = self.tracker.update(detections, confident)
        with timer.stage("analytics"):
            height, width = frame.image.shape[:2]
            aggregates = self.analytics(detections, captured_at_ms, (width, height))
        with timer.stage("publish"):
            message = FrameView(
                v=SCHEMA_VERSION,
                kind="frame",
                rsu_id=self.config.rsu_id,
                camera_id=self.config.camera_id,
                run_id=self.run_id,
                seq=self.frames,
                captured_at_ms=captured_at_ms,
                published_at_ms=now_ms(),
                pipeline_ms=round(timer.frame_so_far_ms(), 3),
                image_width=width,
                image_height=height,
                objects=to_objects(detections),
            )
            batch: list[FrameView | LaneAggregates | RsuHealth] = [message]
            if aggregates is not None:
                batch.append(aggregates)
            wall = time.monotonic()
            self._frame_times.append(wall)
            if wall >= self._next_health:
                self._next_health = wall + self.config.health_interval_s
                batch.append(self.health(status="ok"))
            self.publisher.send(batch)
        if timer.end_frame() > self.config.budget_ms:
            self.budget_violations += 1
        self.frames += 1
        for name, count in detections.counts_by_class().items():
            self.class_totals[name] = self.class_totals.get(name, 0) + count
        start = time.perf_counter()
        if collect_due() is not None:  # the frame is sent: collect now, not inside the next
            timer.between_frames.append((time.perf_counter() - start) * 1000.0)
        return message

    def fps(self) -> float:
        if len(self._frame_times) < 2:
            return 0.0
        span = self._frame_times[-1] - self._frame_times[0]
        return (len(self._frame_times) - 1) / span if span > 0 else 0.0

    def health(
        self, status: str, source_connected: bool | None = None, detail: str | None = None
    ) -> RsuHealth:
        """``source_connected``: default, what the live source says (True for a replay)."""
        source = self.source
        if source_connected is None:
            source_connected = source.connected if source is not None else True
        if status == "ok" and not source_connected:
            status = "degraded"
            detail = detail or (source.last_error if source is not None else None)
        latency = StageTimer.percentiles(self.timer.recent)
        publisher = self.publisher
        if status == "ok" and publisher.spool_depth:
            status = "degraded"
            detail = detail or f"bus unreachable: {publisher.spool_depth} messages spooled"
        if status == "ok" and self.timer.recent and latency["p99_ms"] > self.config.budget_ms:
            status = "degraded"
            detail = detail or f"p99 latency {latency['p99_ms']:.1f} ms over budget"
        message = RsuHealth(
            rsu_id=self.config.rsu_id,
            camera_id=self.config.camera_id,
            run_id=self.run_id,
            seq=self._health_seq,
            sent_at_ms=now_ms(),
            status=status,
            source_connected=source_connected,
            fps=round(self.fps(), 2),
            frames_processed=self.frames,
            frames_skipped=source.frames_skipped if source is not None else 0,
            latency=LatencySummary(**latency) if self.timer.recent else None,
            budget_ms=self.config.budget_ms,
            budget_violations=self.budget_violations,
            bus_connected=publisher.connected,
            spool_depth=publisher.spool_depth,
            spool_dropped=publisher.spool.dropped if publisher.spool is not None else 0,
            reconnects=publisher.reconnects,
            detail=detail,
        )
        self._health_seq += 1
        return message

    def finish(self, detail: str, frame_ms: float) -> None:
        """Send the last partial aggregates and tell the center this camera stopped."""
        batch: list[LaneAggregates | RsuHealth] = []
        last = self.analytics.flush(frame_ms)
        if last is not None:
            batch.append(last)
        batch.append(self.health(status="down", source_connected=False, detail=detail))
        self.publisher.send(batch)
