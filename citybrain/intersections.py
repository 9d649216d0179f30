"""Intersections: which RSU lanes make up which approach, and their live state.

An operator describes an intersection once (``PUT /intersections/{id}``): its approaches
and, for each, the lanes of the RSU cameras that watch it.  The live state of an approach
adds up its lanes: flow and queued vehicles are summed, the queue length is the longest
lane's, occupancy is the lanes' mean, and speed is the flow-weighted mean.
"""

from __future__ import annotations

from collections import defaultdict

import orjson
import redis
from pydantic import Field, model_validator

from citybrain.lane_state import LaneState, rsu_lane_states
from citybrain.state import TrafficState
from common.config import StrictModel

INTERSECTIONS_HASH = "cb:intersections"
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


class LaneRef(StrictModel):
    rsu_id: str = Field(pattern=ID_PATTERN, description="the RSU whose camera sees the lane")
    camera_id: str = Field("cam0", pattern=ID_PATTERN, description="that RSU's camera")
    lane_id: str = Field(pattern=ID_PATTERN, description="the lane id in the camera's scene")
    movements: list[str] = Field(default_factory=list, description="e.g. left, through, right")


class Approach(StrictModel):
    name: str = Field(pattern=ID_PATTERN, description="e.g. north, or N-main")
    lanes: list[LaneRef] = Field(min_length=1, max_length=32)


class Intersection(StrictModel):
    id: str = Field(pattern=ID_PATTERN, description="intersection id, unique in the city")
    name: str | None = Field(None, max_length=200)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    approaches: list[Approach] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _unique(self) -> Intersection:
        names = [a.name for a in self.approaches]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate approach names: {sorted(set(names))}")
        refs = [(r.rsu_id, r.camera_id, r.lane_id) for a in self.approaches for r in a.lanes]
        if len(set(refs)) != len(refs):
            raise ValueError("a lane is listed twice")
        return self


class IntersectionStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def put(self, intersection: Intersection) -> bool:
        """Stores it; True when it is new."""
        return bool(
            self.client.hset(
                INTERSECTIONS_HASH, intersection.id, orjson.dumps(intersection.model_dump())
            )
        )

    def get(self, intersection_id: str) -> Intersection | None:
        raw = self.client.hget(INTERSECTIONS_HASH, intersection_id)
        return Intersection.model_validate(orjson.loads(raw)) if raw else None

    def delete(self, intersection_id: str) -> bool:
        return bool(self.client.hdel(INTERSECTIONS_HASH, intersection_id))

    def ids(self) -> list[str]:
        return sorted(
            k.decode() if isinstance(k, bytes) else k for k in self.client.hkeys(INTERSECTIONS_HASH)
        )


class ApproachState(StrictModel):
    name: str
    flow_veh_h: float | None = Field(description="sum of its lanes' flows")
    queue_vehicles: int | None = Field(description="vehicles queued in its lanes, summed")
    queue_m: float | None = Field(description="the longest queue of its lanes")
    occupancy: float | None = Field(description="mean occupancy of its lanes")
    mean_speed_mps: float | None = Field(description="flow-weighted mean speed")
    counts: dict[str, int] = Field(description="road users counted in the window, by class")
    lanes_reporting: int = Field(description="lanes with a fresh interval")
    lanes: list[dict] = Field(description="each lane's live state")


def approach_state(name: str, lanes: list[LaneState]) -> ApproachState:
    fresh = [lane for lane in lanes if not lane.stale]
    flows = [lane.flow_veh_h for lane in lanes if lane.flow_veh_h is not None]
    counts: dict[str, int] = defaultdict(int)
    for lane in lanes:
        for cls, n in lane.counts.items():
            counts[cls] += n
    speeds = [
        (lane.mean_speed_mps, lane.flow_veh_h or 0.0)
        for lane in fresh
        if lane.mean_speed_mps is not None
    ]
    weight = sum(w for _, w in speeds)
    if speeds and weight > 0:
        speed: float | None = round(sum(s * w for s, w in speeds) / weight, 2)
    elif speeds:
        speed = round(sum(s for s, _ in speeds) / len(speeds), 2)
    else:
        speed = None
    occupancies = [lane.occupancy for lane in fresh if lane.occupancy is not None]
    queues = [lane.queue_vehicles for lane in fresh if lane.queue_vehicles is not None]
    lengths = [lane.queue_m for lane in fresh if lane.queue_m is not None]
    return ApproachState(
        name=name,
        flow_veh_h=round(sum(flows), 1) if flows else None,
        queue_vehicles=sum(queues) if queues else None,
        queue_m=max(lengths) if lengths else None,
        occupancy=round(sum(occupancies) / len(occupancies), 3) if occupancies else None,
        mean_speed_mps=speed,
        counts=dict(sorted(counts.items())),
        lanes_reporting=len(fresh),
        lanes=[lane.__dict__ for lane in lanes],
    )


def intersection_state(
    state: TrafficState, intersection: Intersection, window_s: int, stale_after_s: float
) -> list[ApproachState]:
    by_rsu: dict[str, dict[tuple[str, str], LaneState]] = {}
    for rsu_id in {r.rsu_id for a in intersection.approaches for r in a.lanes}:
        by_rsu[rsu_id] = {
            (lane.camera_id, lane.lane_id): lane
            for lane in rsu_lane_states(state, rsu_id, window_s, stale_after_s)
        }
    approaches = []
    for approach in intersection.approaches:
        lanes = []
        for ref in approach.lanes:
            found = by_rsu[ref.rsu_id].get((ref.camera_id, ref.lane_id))
            lanes.append(
                found
                or LaneState(ref.rsu_id, ref.camera_id, ref.lane_id, approach.name, window_s, 0.0)
            )
        approaches.append(approach_state(approach.name, lanes))
    return approaches
