"""RSU-like sensing in SUMO: what a stop-line camera sees within ``range_m`` of the junction.

Each incoming lane is watched over the last ``range_m`` metres before its stop line; when
the lane is shorter, the watch continues onto the lanes feeding it, as a camera looking up
the road would.  Exit lanes are watched over their first ``range_m`` metres.  Vehicle
positions come from one subscription per vehicle, read in a single call per step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.observation import IntersectionObservation, LaneObservation
from citybrain.sim import sumo_env  # noqa: F401

HALTING_MPS = 0.1  # SUMO's own halting threshold


@dataclass(frozen=True)
class _Watch:
    intersection_id: str
    lane: str  # the lane the observation is reported for
    incoming: bool
    start: float  # position range on the watched lane
    end: float
    offset: float  # distance from ``end`` to the stop line (incoming)


def _upstream(lane, remaining: float, offset: float, depth: int = 0):
    """(lane, start, end, offset) segments covering ``remaining`` m upstream of ``lane``."""
    length = lane.getLength()
    yield lane, max(0.0, length - remaining), length, offset
    if length >= remaining or depth >= 4:
        return
    for pred in lane.getIncoming():
        if pred.getEdge().getFunction() == "internal":
            continue
        yield from _upstream(pred, remaining - length, offset + length, depth + 1)


class SumoSensing:
    def __init__(
        self,
        net,
        intersections: dict[str, SignalIntersection],
        range_m: float = 120.0,
        box_lanes: dict[str, dict[str, int]] | None = None,
    ):
        self.range_m = range_m
        # internal lane -> (intersection, link index)
        self._box = {lane: (iid, link) for iid, lanes in (box_lanes or {}).items()
                     for lane, link in lanes.items()}  # fmt: skip
        self.intersections = intersections
        self._watches: dict[str, list[_Watch]] = defaultdict(list)
        self._watched_m: dict[tuple[str, str, bool], float] = defaultdict(float)
        for iid, inter in intersections.items():
            for lane_id in inter.incoming_lanes:
                for seg, start, end, off in _upstream(net.getLane(lane_id), range_m, 0.0):
                    self._watches[seg.getID()].append(_Watch(iid, lane_id, True, start, end, off))
                    self._watched_m[(iid, lane_id, True)] += end - start
            for lane_id in inter.outgoing_lanes:
                length = min(range_m, net.getLane(lane_id).getLength())
                self._watches[lane_id].append(_Watch(iid, lane_id, False, 0.0, length, 0.0))
                self._watched_m[(iid, lane_id, False)] = length
        self._stop_lanes = {
            lane: iid for iid, inter in intersections.items() for lane in inter.incoming_lanes
        }
        self._last_lane: dict[str, str] = {}
        self._libsumo = None

    def attach(self, libsumo) -> None:
        self._libsumo = libsumo
        self._vars = (libsumo.VAR_LANE_ID, libsumo.VAR_LANEPOSITION, libsumo.VAR_SPEED,
                      libsumo.VAR_WAITING_TIME)  # fmt: skip

    def observe(self, now: float) -> dict[str, IntersectionObservation]:
        """Observations of every intersection after the step that ended at ``now``."""
        ls = self._libsumo
        assert ls is not None, "attach() first"
        for vid in ls.simulation.getDepartedIDList():
            ls.vehicle.subscribe(vid, self._vars)
        lane_v, pos_v, speed_v, wait_v = self._vars
        # per (intersection, lane, incoming):
        # [vehicles, queue, max_wait, etas, speed_sum, nearest stopped position (exits)]
        acc: dict[tuple[str, str, bool], list] = {}
        departures: dict[tuple[str, str], int] = defaultdict(int)
        in_box: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        by_link: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        last = self._last_lane
        seen: dict[str, str] = {}
        for vid, res in ls.vehicle.getAllSubscriptionResults().items():
            if not res:
                continue
            lane = res[lane_v]
            seen[vid] = lane
            before = last.get(vid)
            if before is not None and before != lane and before in self._stop_lanes:
                departures[(self._stop_lanes[before], before)] += 1
                box = self._box.get(lane)
                if box is not None:
                    by_link[box[0]][box[1]] += 1
            watches = self._watches.get(lane)
            if not watches:
                box = self._box.get(lane)
                if box is not None:
                    in_box[box[0]][box[1]] += 1
                continue
            pos, speed, wait = res[pos_v], res[speed_v], res[wait_v]
            for w in watches:
                if not w.start <= pos <= w.end:
                    continue
                key = (w.intersection_id, w.lane, w.incoming)
                a = acc.get(key)
                if a is None:
                    a = acc[key] = [0, 0, 0.0, [], 0.0, float("inf")]
                a[0] += 1
                a[4] += speed
                if speed < HALTING_MPS:
                    a[1] += 1
                    a[2] = max(a[2], wait)
                    if not w.incoming:
                        a[5] = min(a[5], pos)
                elif w.incoming:
                    a[3].append((w.end - pos + w.offset) / speed)
        self._last_lane = seen
        out: dict[str, IntersectionObservation] = {}
        for iid, inter in self.intersections.items():
            incoming = {}
            for lane in inter.incoming_lanes:
                a = acc.get((iid, lane, True))
                dep = departures.get((iid, lane), 0)
                watched = self._watched_m[(iid, lane, True)]
                if a is None:
                    incoming[lane] = LaneObservation(departures=dep, watched_m=watched)
                else:
                    incoming[lane] = LaneObservation(
                        vehicles=a[0], queue=a[1], max_wait_s=a[2], etas_s=tuple(sorted(a[3])),
                        mean_speed_mps=a[4] / a[0], departures=dep, watched_m=watched,
                    )  # fmt: skip
            outgoing = {}
            for lane in inter.outgoing_lanes:
                a = acc.get((iid, lane, False))
                watched = self._watched_m[(iid, lane, False)]
                outgoing[lane] = (
                    LaneObservation(watched_m=watched)
                    if a is None
                    else LaneObservation(
                        vehicles=a[0],
                        queue=a[1],
                        mean_speed_mps=a[4] / a[0],
                        watched_m=watched,
                        stopped_from_junction_m=a[5] if a[5] != float("inf") else None,
                    )
                )
            out[iid] = IntersectionObservation(
                iid,
                now,
                self.range_m,
                incoming,
                outgoing,
                dict(in_box.get(iid, {})),
                dict(by_link.get(iid, {})),
            )
        return out
