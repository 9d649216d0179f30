"""What a signal planner may see: RSU-like per-lane figures within camera range.

A camera at the stop line sees the last 100-150 m of each approach and the first metres of
each exit.  From its tracks it knows, per lane, how many road users are there, how many are
stopped, how long the longest has waited, and when the moving ones will reach the stop
line.  Nothing else: no routes, no vehicles beyond range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

JAM_SPACING_M = 5.0  # bumper to bumper, cars; more than range / this is implausible
MAX_SPEED_MPS = 70.0


@dataclass(frozen=True)
class LaneObservation:
    """One lane as seen by a camera (incoming lanes: distances are to the stop line)."""

    vehicles: int = 0
    queue: int = 0  # stopped road users
    max_wait_s: float = 0.0  # longest current stop
    etas_s: tuple[float, ...] = ()  # seconds to the stop line of the moving ones, ascending
    mean_speed_mps: float | None = None
    departures: int = 0  # crossed the stop line since the previous observation
    watched_m: float | None = None  # lane length in view, upstream branches summed
    # Exit lanes: distance from the junction to the nearest stopped road user; a small one
    # means the lane is full back to the junction and a green into it only blocks the box.
    stopped_from_junction_m: float | None = None


@dataclass(frozen=True)
class IntersectionObservation:
    intersection_id: str
    time_s: float
    range_m: float
    incoming: dict[str, LaneObservation] = field(default_factory=dict)
    outgoing: dict[str, LaneObservation] = field(default_factory=dict)
    # Road users inside the junction box, by the signal link they are on: the head holds
    # all-red until those on links conflicting with the next green have cleared.
    in_box: dict[int, int] = field(default_factory=dict)
    # Road users that left each lane by each link since the previous observation: the
    # turning counts an RSU measures, from which planners learn how lanes split.
    departures_by_link: dict[int, int] = field(default_factory=dict)


def implausible(obs: IntersectionObservation, expected_lanes: tuple[str, ...]) -> str | None:
    """Why ``obs`` cannot be trusted, or None.  Missing lanes count as implausible."""
    missing = [lane for lane in expected_lanes if lane not in obs.incoming]
    if missing:
        return f"no observation for lane(s) {', '.join(missing[:3])}"
    for where, lanes in (("incoming", obs.incoming), ("outgoing", obs.outgoing)):
        for lane, lo in lanes.items():
            watched = lo.watched_m if lo.watched_m is not None else obs.range_m
            capacity = 1.5 * max(watched, JAM_SPACING_M) / JAM_SPACING_M
            if lo.vehicles < 0 or lo.queue < 0 or lo.departures < 0:
                return f"{where} lane {lane}: negative count"
            if lo.queue > lo.vehicles:
                return f"{where} lane {lane}: queue {lo.queue} above vehicles {lo.vehicles}"
            if lo.vehicles > capacity:
                return (
                    f"{where} lane {lane}: {lo.vehicles} vehicles in {watched:g} m is more than fit"
                )
            if not math.isfinite(lo.max_wait_s) or lo.max_wait_s < 0:
                return f"{where} lane {lane}: bad waiting time {lo.max_wait_s!r}"
            speed = lo.mean_speed_mps
            if speed is not None and not (math.isfinite(speed) and 0 <= speed <= MAX_SPEED_MPS):
                return f"{where} lane {lane}: bad speed {speed!r}"
            if any(not (math.isfinite(e) and e >= 0) for e in lo.etas_s):
                return f"{where} lane {lane}: bad arrival time"
    return None
