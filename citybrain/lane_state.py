"""Live per-lane traffic figures, from what ingest keeps in Redis.

- ``flow_veh_h`` and ``counts``: road users the RSU counted in the lane over the last
  ``window_s`` seconds, divided by the time its lane intervals covered in that window.  So an
  RSU that started a minute ago, or lost its camera for a while, is not read as light traffic.
- ``mean_speed_mps``, ``occupancy``, ``queue_vehicles`` and ``queue_m`` come from the lane's
  latest interval.  They are ``stale`` once that interval ended more than ``stale_after_s``
  ago, or reached the center that long ago: a camera whose clock runs ahead stamps its
  intervals in the future, and must not look live for that long after it went silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from citybrain.state import TrafficState, now_ms
from common.schemas import VEHICLE_CLASSES

VEHICLES = {c.value for c in VEHICLE_CLASSES}


@dataclass
class LaneState:
    rsu_id: str
    camera_id: str
    lane_id: str
    approach: str | None
    window_s: int
    observed_s: float
    counts: dict[str, int] = field(default_factory=dict)
    flow_veh_h: float | None = None
    mean_speed_mps: float | None = None
    occupancy: float | None = None
    queue_vehicles: int | None = None
    queue_m: float | None = None
    interval_end_ms: int | None = None
    stale: bool = True


def rsu_lane_states(
    state: TrafficState, rsu_id: str, window_s: int, stale_after_s: float
) -> list[LaneState]:
    """Every lane the RSU's cameras reported in their latest lane intervals."""
    now = now_ms()
    base = state.config.state.bin_s
    window = max(base, window_s // base * base)
    since = (now - window * 1000) // (base * 1000) * (base * 1000)
    bins = state.counts(rsu_id, since, now + 1, window)
    observed: dict[str, int] = {}
    counted: dict[tuple[str, str], dict[str, int]] = {}
    for b in bins:
        if b.lane_id == "*":
            observed[b.camera_id] = observed.get(b.camera_id, 0) + b.observed_ms
        else:
            into = counted.setdefault((b.camera_id, b.lane_id), {})
            for cls, n in b.counts.items():
                into[cls] = into.get(cls, 0) + n
    out = []
    for camera_id, camera in state.camera_states(rsu_id).items():
        latest: dict[str, Any] | None = camera.get("lanes")
        if not latest:
            continue
        end = int(latest["interval_start_ms"] + latest["observed_s"] * 1000)
        limit = stale_after_s * 1000 + latest["interval_s"] * 1000
        stale = now - end > limit or now - camera.get("lanes_ingested_ms", 0) > limit
        seconds = observed.get(camera_id, 0) / 1000.0
        for lane in latest["lanes"]:
            counts = counted.get((camera_id, lane["lane_id"]), {})
            vehicles = sum(n for cls, n in counts.items() if cls in VEHICLES)
            out.append(
                LaneState(
                    rsu_id=rsu_id,
                    camera_id=camera_id,
                    lane_id=lane["lane_id"],
                    approach=lane.get("approach"),
                    window_s=window,
                    observed_s=round(seconds, 1),
                    counts=counts,
                    flow_veh_h=round(vehicles * 3600 / seconds, 1) if seconds > 0 else None,
                    mean_speed_mps=lane.get("mean_speed_mps"),
                    occupancy=lane.get("occupancy"),
                    queue_vehicles=lane.get("queue_vehicles"),
                    queue_m=lane.get("queue_m"),
                    interval_end_ms=end,
                    stale=stale,
                )
            )
    return out
