"""Versioned bus messages between RSUs and the traffic center.

Modelled on the roadside V2X messages (China RSM participants, ETSI CPM perceived objects,
SAE J3224 SDSM): one message per processed camera frame with the road users seen in it, one
per interval with per-lane aggregates, and periodic RSU health.  Every message carries the
schema version ``v`` and its ``kind``; the pair ``(rsu_id, camera_id, run_id, seq)`` names a
message uniquely, which is what the center de-duplicates on (delivery is at-least-once).

Encoding is orjson over the pydantic models; :func:`decode_message` validates bytes in one pass
and raises :class:`MessageError` with a reason fit for the dead-letter stream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import Enum
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
MAX_OBJECTS_PER_FRAME = 2000

# JSON allows integers of any size; Redis, SQLite and PostgreSQL keep 64 bits, and one too
# large would fail the ingest worker's writes instead of the message's validation.
INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
# Lane, line and zone ids: a scene's own, or a simulator's; the center joins them into its
# counter names with "|" (citybrain/keys.py), so that one character is not theirs to use.
SceneId = Annotated[str, Field(pattern=r"^[^|]{1,128}$")]
EpochMs = Annotated[
    int, Field(ge=0, le=INT64_MAX, description="UTC time, milliseconds since the Unix epoch")
]


def repeated(ids: Iterable[str]) -> list[str]:
    """The ids that occur more than once, sorted."""
    return sorted(i for i, n in Counter(ids).items() if n > 1)


class RoadUserClass(str, Enum):
    """Road-user classes an RSU reports (a subset of COCO, named as COCO names them)."""

    person = "person"
    bicycle = "bicycle"
    car = "car"
    motorcycle = "motorcycle"
    bus = "bus"
    truck = "truck"


VEHICLE_CLASSES = frozenset(
    {RoadUserClass.car, RoadUserClass.motorcycle, RoadUserClass.bus, RoadUserClass.truck}
)


class _Message(BaseModel):
    # No NaN or infinity: JSON has neither, yet the parser reads `Infinity` and `1e999`; one
    # stored would break every JSON answer about its RSU.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GroundPosition(_Message):
    x: float = Field(description="metres east (scene frame x) of the scene origin")
    y: float = Field(description="metres north (scene frame y) of the scene origin")


class GeoPosition(_Message):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class PerceivedObject(_Message):
    """One road user in one frame (RSM participant / CPM perceived object)."""

    track_id: Count | None = Field(None, description="stable id across frames, if tracked")
    category: RoadUserClass
    confidence: float = Field(ge=0.0, le=1.0)
    bbox: tuple[float, float, float, float] = Field(
        description="pixel box x1, y1, x2, y2 in the full camera frame"
    )
    ground: GroundPosition | None = Field(None, description="bottom-centre on the ground plane")
    geo: GeoPosition | None = Field(None, description="WGS84, when the scene is georeferenced")
    speed_mps: float | None = Field(None, ge=0.0)
    heading_deg: float | None = Field(None, ge=0.0, lt=360.0, description="clockwise from north")
    lane_id: SceneId | None = None


class _RsuMessage(_Message):
    """Header of every RSU message; (kind, rsu_id, camera_id, run_id, seq) names it."""

    v: Literal[1] = SCHEMA_VERSION
    rsu_id: Identifier
    camera_id: Identifier
    run_id: Identifier = Field(description="changes each time the RSU process starts")
    seq: Count = Field(description="sequence number of this kind of message in the run")


class FrameObjects(_RsuMessage):
    """Road users perceived in one processed camera frame."""

    kind: Literal["frame"] = "frame"
    captured_at_ms: EpochMs
    published_at_ms: EpochMs
    pipeline_ms: float = Field(ge=0.0, description="decoded frame -> message ready, on the RSU")
    image_width: Count = Field(gt=0)
    image_height: Count = Field(gt=0)
    objects: list[PerceivedObject] = Field(max_length=MAX_OBJECTS_PER_FRAME)


class LaneInterval(_Message):
    lane_id: SceneId
    approach: str | None = None
    counts: dict[RoadUserClass, Count] = Field(
        default_factory=dict, description="road users that crossed a line in this lane"
    )
    mean_speed_mps: float | None = Field(None, ge=0.0)
    occupancy: float | None = Field(None, ge=0.0, le=1.0, description="share of time occupied")
    queue_vehicles: Count | None = None
    queue_m: float | None = Field(None, ge=0.0)


class LineInterval(_Message):
    line_id: SceneId
    positive: dict[RoadUserClass, Count] = Field(
        default_factory=dict, description="crossings left-to-right of the line's p1->p2"
    )
    negative: dict[RoadUserClass, Count] = Field(default_factory=dict)


class ZoneInterval(_Message):
    zone_id: SceneId
    kind: str = Field(description="crosswalk, waiting, intersection, no_stopping or area")
    approach: str | None = None
    entered: dict[RoadUserClass, Count] = Field(
        default_factory=dict, description="road users that came into the zone, once per visit"
    )
    mean_present: dict[RoadUserClass, float] = Field(
        default_factory=dict, description="mean road users inside per frame"
    )
    max_present: Count = Field(0, description="most road users inside in one frame")
    present: dict[RoadUserClass, Count] = Field(
        default_factory=dict, description="road users inside at the interval's last frame"
    )
    stopped: Count = Field(0, description="standing (not parked) at the last frame")
    parked: Count = Field(0, description="parked at the last frame")
    longest_stay_s: float | None = Field(
        None, ge=0.0, description="how long the longest-staying road user present has been in"
    )


class LaneAggregates(_RsuMessage):
    """Per-lane aggregates over one interval, computed on the RSU."""

    kind: Literal["lane_aggregates"] = "lane_aggregates"
    interval_start_ms: EpochMs
    interval_s: float = Field(gt=0.0, description="bin length; bins are aligned to the clock")
    observed_s: float = Field(
        ge=0.0,
        description="time within the bin covered by processed frames: less than interval_s "
        "when the RSU started mid-bin, stopped, or lost its camera. Divide counts by it for flow",
    )
    lanes: list[LaneInterval] = Field(max_length=256)
    lines: list[LineInterval] = Field(default_factory=list, max_length=256)
    zones: list[ZoneInterval] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _each_id_once(self) -> LaneAggregates:
        # Twice, the live counters would add both and the history keep one.
        for name, ids in (
            ("lanes", [lane.lane_id for lane in self.lanes]),
            ("lines", [line.line_id for line in self.lines]),
            ("zones", [zone.zone_id for zone in self.zones]),
        ):
            if twice := repeated(ids):
                raise ValueError(f"{name}: {', '.join(map(repr, twice))} more than once")
        return self


class LatencySummary(_Message):
    p50_ms: float = Field(ge=0.0)
    p99_ms: float = Field(ge=0.0)


class RsuHealth(_RsuMessage):
    """Heartbeat of one RSU camera pipeline."""

    kind: Literal["health"] = "health"
    sent_at_ms: EpochMs
    status: Literal["ok", "degraded", "down"]
    source_connected: bool
    fps: float = Field(ge=0.0, description="processed frames per second, recent window")
    frames_processed: Count
    frames_skipped: Count
    latency: LatencySummary | None = None
    budget_ms: float = Field(gt=0.0)
    budget_violations: Count
    bus_connected: bool = True
    spool_depth: Count = Field(0, description="messages waiting for the bus on the RSU")
    spool_dropped: Count = Field(0, description="spooled messages dropped: spool full")
    reconnects: Count = Field(0, description="bus reconnections since the RSU started")
    detail: str | None = Field(None, max_length=1000)


Message = Annotated[FrameObjects | LaneAggregates | RsuHealth, Field(discriminator="kind")]
_MESSAGE_ADAPTER: TypeAdapter[FrameObjects | LaneAggregates | RsuHealth] = TypeAdapter(Message)


class MessageError(ValueError):
    """Bytes that are not a valid message; ``str(exc)`` is the dead-letter reason."""


def message_key(msg: FrameObjects | LaneAggregates | RsuHealth) -> str:
    """The identity the center de-duplicates on."""
    return f"{msg.kind}/{msg.rsu_id}/{msg.camera_id}/{msg.run_id}/{msg.seq}"


def encode_message(msg: FrameObjects | LaneAggregates | RsuHealth) -> bytes:
    return orjson.dumps(msg.model_dump(mode="json", exclude_none=True))


def decode_message(data: bytes) -> FrameObjects | LaneAggregates | RsuHealth:
    """Parse and validate in one pass (pydantic-core reads the JSON itself) when the message
    starts as our encoder writes it; otherwise, or on failure, look closer, to check the
    version and give the dead-letter stream a precise reason."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message too large: {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    if data.startswith(b'{"v":1,'):  # as our encoder writes it: the version is there
        try:
            return _MESSAGE_ADAPTER.validate_json(data)
        except ValidationError:
            pass
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MessageError(f"message must be a JSON object, got {type(raw).__name__}")
    version = raw.get("v")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema version v={version!r} (this build reads v=1)")
    try:
        return _MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise MessageError(f"invalid {raw.get('kind', 'message')}: {problems}") from None
