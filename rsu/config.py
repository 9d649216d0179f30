"""RSU process configuration."""

from __future__ import annotations

from pydantic import Field

from common.bus import BusConfig
from common.config import StrictModel
from rsu.detector import DetectorConfig
from rsu.metrics import MetricsConfig
from rsu.motion import MotionConfig
from rsu.source import SourceConfig
from rsu.spool import SpoolConfig
from rsu.tracker import TrackerConfig


class RsuConfig(StrictModel):
    rsu_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="unique id of this RSU")
    camera_id: str = Field("cam0", pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="camera id")
    data_dir: str | None = Field(None, description="extra directory searched for models/videos")
    source: SourceConfig | None = Field(None, description="the live camera (rsu run)")
    scene: str | None = Field(None, description="scene file: lanes, lines, calibration")
    max_fps: float | None = Field(
        None, gt=0, description="detect at most this often; newer frames replace older ones"
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    crossing_margin: float = Field(
        0.1, ge=0, description="a side of a line counts beyond this share of the box height"
    )
    crossing_min_frames: int = Field(
        2, ge=1, description="frames the new side must hold before a crossing counts"
    )
    aggregate_interval_s: float = Field(
        10.0, gt=0, description="seconds per lane_aggregates message (lanes and lines)"
    )
    bus: BusConfig = Field(default_factory=BusConfig)
    spool: SpoolConfig = Field(
        default_factory=SpoolConfig, description="where messages wait while the bus is down"
    )
    budget_ms: float = Field(20.0, gt=0, description="per-frame latency budget, decode->publish")
    health_interval_s: float = Field(1.0, gt=0, description="seconds between health messages")
