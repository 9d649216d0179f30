"""Response bodies of the traffic-center API."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from citybrain.intersections import ApproachState, Intersection
from citybrain.registry import RsuInfo
from common.schemas import FrameObjects, LaneAggregates, LatencySummary


def ms_of(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def dt_of(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


class HealthReport(BaseModel):
    status: str = Field(
        description="ok; degraded when ingest lags or the history store is down; down when "
        "Redis is unreachable. Silent cameras are counted in stale_cameras, not here"
    )
    redis: bool
    history: bool | None = Field(None, description="history store reachable (None: disabled)")
    ingest_unread: int = Field(description="bus entries not yet read by ingest")
    ingest_pending: int = Field(description="entries read but not yet acknowledged")
    oldest_unread_age_s: float | None = Field(
        None, description="age of the oldest entry ingest has not read: the lag in seconds"
    )
    dead_letters: int = Field(description="invalid messages set aside in dead-letter streams")
    dead_letters_trimmed: int = Field(
        0,
        description="dead letters removed by the streams' cap (100,000 per partition) before "
        "anyone resent or dropped them",
    )
    lost_entries: int = Field(
        0,
        description="bus entries trimmed before ingest read them (an outage longer than "
        "bus.retention_s)",
    )
    rsus: int
    stale_cameras: int
    clock_ahead_cameras: int = Field(
        0,
        description="cameras whose messages are stamped more than state.clock_ahead_alert_s "
        "after they reached the bus: clocks ahead, counting into future bins",
    )
    clock_behind_cameras: int = Field(
        0,
        description="cameras whose latest messages all reached the bus more than "
        "state.clock_behind_alert_s after they were sent: clocks behind, or spools re-sent",
    )
    problems: list[str] = Field(default_factory=list)


class CameraSummary(BaseModel):
    camera_id: str
    last_seen_ms: int
    last_seen: datetime
    status: str = Field(description="RSU-reported status (ok/degraded/down) or stale/unknown")
    stale: bool


class RsuSummary(BaseModel):
    rsu_id: str
    registered: bool = Field(description="an operator registered it (PUT /rsus/{rsu_id})")
    info: RsuInfo | None = None
    cameras: list[CameraSummary]


class RsuList(BaseModel):
    items: list[RsuSummary]
    total: int
    limit: int
    offset: int


class CameraState(BaseModel):
    camera_id: str
    status: str
    stale: bool
    source_connected: bool | None = None
    fps: float | None = Field(None, description="frames per second the RSU processes")
    latency: LatencySummary | None = Field(None, description="RSU decode->publish latency")
    budget_violations: int | None = None
    frames_processed: int | None = None
    spool_depth: int | None = Field(None, description="messages waiting on the RSU for the bus")
    frame: FrameObjects | None = Field(None, description="latest frame: its objects and timing")
    lanes: LaneAggregates | None = Field(
        None, description="latest interval per lane: counts, occupancy, queue, mean speed"
    )
    frame_age_ms: int | None = Field(None, description="now - capture time of that frame")
    publish_to_state_ms: int | None = Field(None, description="RSU publish -> stored here")
    clock_ahead_ms: int | None = Field(
        None,
        description="how far the camera's clock ran ahead of the bus server's in its latest "
        "batch (send time stamped by the RSU - time the server added the message); "
        "negative when behind, or when its messages were delayed (network, spool)",
    )
    detail: str | None = None


class RsuState(BaseModel):
    rsu_id: str
    cameras: list[CameraState]


class CountBinOut(BaseModel):
    start: datetime
    start_ms: int
    camera_id: str
    lane_id: str = Field(
        description="'*' is the whole camera, 'line:<id>' a counting line, else a scene lane id"
    )
    frames: int = Field(description="frames processed in the bin (camera rows only)")
    observations: dict[str, int] = Field(
        description="object-frames per class: the sum over frames of objects seen"
    )
    counts: dict[str, int] = Field(
        description="road users counted in the lane: tracks that crossed a line in it"
    )
    positive: dict[str, int] = Field(
        default_factory=dict, description="line rows: crossings left-to-right of p1->p2"
    )
    negative: dict[str, int] = Field(default_factory=dict, description="line rows: the reverse")


class CountsOut(BaseModel):
    rsu_id: str
    since: datetime
    until: datetime
    bin_s: int
    bins: list[CountBinOut]


class LaneStateOut(BaseModel):
    rsu_id: str
    camera_id: str
    lane_id: str
    approach: str | None
    window_s: int = Field(description="counts and flow cover this many seconds back from now")
    observed_s: float = Field(description="of which the RSU watched this much")
    counts: dict[str, int]
    flow_veh_h: float | None = Field(description="vehicles counted per hour watched")
    mean_speed_mps: float | None
    occupancy: float | None
    queue_vehicles: int | None
    queue_m: float | None
    interval_end_ms: int | None = Field(description="end of the latest interval reported")
    stale: bool = Field(description="no fresh interval: speed, occupancy and queue are old")


class RsuLanes(BaseModel):
    rsu_id: str
    lanes: list[LaneStateOut]


class HistoryBinOut(BaseModel):
    start: datetime
    start_ms: int
    camera_id: str
    lane_id: str
    approach: str | None
    observed_s: float = Field(description="seconds of the bin the RSU watched")
    counts: dict[str, int]
    vehicles: int
    flow_veh_h: float | None
    mean_speed_mps: float | None
    occupancy: float | None
    queue_max_vehicles: int | None
    queue_max_m: float | None


class HistoryOut(BaseModel):
    rsu_id: str
    since: datetime
    until: datetime
    bin_s: int
    bins: list[HistoryBinOut]


class IntersectionList(BaseModel):
    items: list[Intersection]
    total: int
    limit: int
    offset: int


class IntersectionState(BaseModel):
    id: str
    name: str | None
    at_ms: int
    window_s: int
    approaches: list[ApproachState]
    flow_veh_h: float | None = Field(description="all approaches")
    queue_vehicles: int | None


class KeyOut(BaseModel):
    key_id: str
    name: str
    role: str
    created: datetime


class NewKey(KeyOut):
    key: str = Field(description="the secret API key: shown this once, store it now")


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w .@\-]+$")
    role: str = Field(pattern="^(viewer|operator|admin)$")


class BusCredentials(BaseModel):
    rsu_id: str
    username: str = Field(description="Redis ACL user: put it into the RSU's bus.redis_url")
    password: str = Field(description="shown this once; store it in the RSU's config now")
    stream: str = Field(description="the only key these credentials can write")
    partitions: int = Field(description="the RSU's bus.partitions must be this")
