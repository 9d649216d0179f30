"""Virtual RSUs for the digital twin: what the cameras of each signalised junction would send.

One virtual RSU per approach (incoming edge) of every traffic light, watching the last
``range_m`` of its lanes; and, given the junction's box and exit lanes, one junction camera
per traffic light watching the box and the first ``range_m`` of every exit, as a dome
camera over the junction does.  Each step it sends a ``frame`` message of the road users in view
(ground position in the net's coordinates, speed, heading, lane, a stable track id), with
configurable misses and position noise; each interval it sends ``lane_aggregates``: per lane
the road users that crossed the stop line by class, mean speed, occupancy of the stop-line
area and the queue at the end.  The messages are the schema camera RSUs send
(``common/schemas.py``), so everything downstream runs unchanged.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

from common.frame_codec import FrameView, GroundPositionView, PerceivedObjectView, encode
from common.schemas import (
    SCHEMA_VERSION,
    LaneAggregates,
    LaneInterval,
    RoadUserClass,
    encode_message,
)

HALTING_MPS = 0.5
STOP_AREA_M = 20.0  # occupancy is measured over the last metres before the stop line
VCLASS = {
    "bus": RoadUserClass.bus, "coach": RoadUserClass.bus, "truck": RoadUserClass.truck,
    "trailer": RoadUserClass.truck, "delivery": RoadUserClass.truck,
    "motorcycle": RoadUserClass.motorcycle, "moped": RoadUserClass.motorcycle,
    "bicycle": RoadUserClass.bicycle, "pedestrian": RoadUserClass.person,
}  # fmt: skip


@dataclass
class VirtualCamera:
    rsu_id: str
    intersection: str
    approach: str  # the SUMO edge id; "junction" for the camera over the box and exits
    lanes: dict[str, float]  # approach lanes -> length (stop-line counts, aggregates)
    watch: dict[str, tuple[float, float]] = field(default_factory=dict)  # lane -> positions
    seq: int = 0
    agg_seq: int = 0
    # interval accumulators
    crossed: dict[str, dict[RoadUserClass, int]] = field(default_factory=dict)
    speed_sum: dict[str, float] = field(default_factory=dict)
    speed_n: dict[str, int] = field(default_factory=dict)
    occupied_steps: dict[str, int] = field(default_factory=dict)
    steps: int = 0


def rsu_id_for(tls_id: str, index: int, approach: int | str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.\-]", "-", tls_id)[:40]
    return f"twin-{index:03d}-{slug}-{approach}"


class VirtualRsus:
    def __init__(
        self,
        net,
        tls_incoming: dict[str, tuple[str, ...]],
        *,
        tls_box: dict[str, dict[str, int]] | None = None,
        tls_outgoing: dict[str, tuple[str, ...]] | None = None,
        range_m: float = 120.0,
        miss_rate: float = 0.0,
        noise_m: float = 0.0,
        seed: int = 0,
        run_id: str = "twin",
    ) -> None:
        if not 0 <= miss_rate < 1:
            raise ValueError(f"miss_rate must be in [0, 1), got {miss_rate}")
        if noise_m < 0:
            raise ValueError(f"noise_m must be >= 0, got {noise_m}")
        self.range_m = range_m
        self.miss_rate = miss_rate
        self.noise_m = noise_m
        self.run_id = run_id
        self._rng = random.Random(seed)
        self.cameras: list[VirtualCamera] = []
        self._by_lane: dict[str, list[VirtualCamera]] = defaultdict(list)
        self._stop_camera: dict[str, VirtualCamera] = {}  # approach lane -> its camera
        for index, (tls, lanes) in enumerate(sorted(tls_incoming.items())):
            by_edge: dict[str, dict[str, float]] = defaultdict(dict)
            for lane in lanes:
                by_edge[net.getLane(lane).getEdge().getID()][lane] = net.getLane(lane).getLength()
            for k, (edge, edge_lanes) in enumerate(sorted(by_edge.items())):
                watch = {lane: (max(0.0, n - range_m), n) for lane, n in edge_lanes.items()}
                cam = VirtualCamera(rsu_id_for(tls, index, k), tls, edge, dict(edge_lanes), watch)
                self.cameras.append(cam)
                for lane in edge_lanes:
                    self._by_lane[lane].append(cam)
                    self._stop_camera[lane] = cam
        for index, tls in enumerate(sorted(tls_incoming)):
            box = (tls_box or {}).get(tls, {})
            exits = (tls_outgoing or {}).get(tls, ())
            if not box and not exits:
                continue
            watch = {lane: (0.0, math.inf) for lane in box}
            for lane in exits:
                watch[lane] = (0.0, min(range_m, net.getLane(lane).getLength()))
            cam = VirtualCamera(rsu_id_for(tls, index, "junction"), tls, "junction", {}, watch)
            self.cameras.append(cam)
            for lane in watch:
                self._by_lane[lane].append(cam)
        self._track_ids: dict[str, int] = {}
        self._last_lane: dict[str, str] = {}

    def _track(self, vid: str) -> int:
        tid = self._track_ids.get(vid)
        if tid is None:
            tid = self._track_ids[vid] = len(self._track_ids) + 1
        return tid

    def step(self, now_ms: int, vehicles: dict[str, tuple]) -> list[tuple[str, bytes]]:
        """Frames of this step. ``vehicles``: id -> (lane, pos, speed, x, y, angle, vclass)."""
        objects: dict[str, list[PerceivedObjectView]] = defaultdict(list)
        occupied: set[str] = set()
        noise = self.noise_m
        for vid, (lane, pos, speed, x, y, angle, vclass) in vehicles.items():
            before = self._last_lane.get(vid)
            if before is not None and before != lane and before in self._stop_camera:
                cam = self._stop_camera[before]
                cls = VCLASS.get(vclass, RoadUserClass.car)
                counts = cam.crossed.setdefault(before, {})
                counts[cls] = counts.get(cls, 0) + 1
            for cam in self._by_lane.get(lane, ()):
                low, high = cam.watch[lane]
                if not low <= pos <= high:
                    continue
                if lane in cam.lanes:  # an approach lane: the interval's figures
                    cam.speed_sum[lane] = cam.speed_sum.get(lane, 0.0) + speed
                    cam.speed_n[lane] = cam.speed_n.get(lane, 0) + 1
                    if cam.lanes[lane] - pos <= STOP_AREA_M:
                        occupied.add(lane)
                if self.miss_rate and self._rng.random() < self.miss_rate:
                    continue
                nx = x + (self._rng.gauss(0, noise) if noise else 0.0)
                ny = y + (self._rng.gauss(0, noise) if noise else 0.0)
                objects[cam.rsu_id].append(
                    PerceivedObjectView(
                        track_id=self._track(vid),
                        category=VCLASS.get(vclass, RoadUserClass.car),
                        confidence=0.9,
                        bbox=(0.0, 0.0, 1.0, 1.0),  # a virtual camera has no pixels
                        ground=GroundPositionView(x=nx, y=ny),
                        speed_mps=max(0.0, speed),
                        heading_deg=angle % 360.0,
                        lane_id=lane,
                    )
                )
        self._last_lane = {vid: v[0] for vid, v in vehicles.items()}
        # Captured at simulated time, sent at the wall clock's: the center checks RSUs'
        # clocks against its own, and simulated time runs ahead of it.
        sent_ms = int(time.time() * 1000)
        out = []
        for cam in self.cameras:
            cam.steps += 1
            for lane in occupied & cam.lanes.keys():
                cam.occupied_steps[lane] = cam.occupied_steps.get(lane, 0) + 1
            msg = FrameView(
                v=SCHEMA_VERSION, kind="frame", rsu_id=cam.rsu_id, camera_id="cam0",
                run_id=self.run_id, seq=cam.seq, captured_at_ms=now_ms, published_at_ms=sent_ms,
                pipeline_ms=0.0, image_width=1, image_height=1,
                objects=objects.get(cam.rsu_id, []),
            )  # fmt: skip
            cam.seq += 1
            out.append((cam.rsu_id, encode(msg)))
        return out

    def aggregates(
        self, interval_start_ms: int, interval_s: float, vehicles: dict[str, tuple]
    ) -> list[tuple[str, bytes]]:
        """One ``lane_aggregates`` message per camera for the interval just ended."""
        halted: dict[str, list[float]] = defaultdict(list)
        for lane, pos, speed, *_ in vehicles.values():
            cam = self._stop_camera.get(lane)
            if cam is not None and speed < HALTING_MPS and cam.lanes[lane] - pos <= self.range_m:
                halted[lane].append(cam.lanes[lane] - pos)
        out = []
        for cam in self.cameras:
            if not cam.lanes:
                continue  # a junction camera: frames only
            lanes = []
            for lane in cam.lanes:
                n = cam.speed_n.get(lane, 0)
                queue = halted.get(lane, [])
                lanes.append(
                    LaneInterval(
                        lane_id=lane, approach=cam.approach,
                        counts=cam.crossed.get(lane, {}),
                        mean_speed_mps=cam.speed_sum[lane] / n if n else None,
                        occupancy=cam.occupied_steps.get(lane, 0) / max(cam.steps, 1),
                        queue_vehicles=len(queue),
                        queue_m=round(max(queue) + 5.0, 1) if queue else 0.0,
                    )
                )  # fmt: skip
            msg = LaneAggregates(
                rsu_id=cam.rsu_id, camera_id="cam0", run_id=self.run_id, seq=cam.agg_seq,
                interval_start_ms=interval_start_ms, interval_s=interval_s,
                observed_s=interval_s, lanes=lanes,
            )  # fmt: skip
            cam.agg_seq += 1
            out.append((cam.rsu_id, encode_message(msg)))
            cam.crossed, cam.speed_sum, cam.speed_n = {}, {}, {}
            cam.occupied_steps, cam.steps = {}, 0
        return out


def sumo_vehicles(libsumo) -> dict[str, tuple]:
    """id -> (lane, pos, speed, x, y, angle, vclass) for every vehicle (subscriptions)."""
    out = {}
    for vid, res in libsumo.vehicle.getAllSubscriptionResults().items():
        if res:
            x, y = res[libsumo.VAR_POSITION]
            out[vid] = (res[libsumo.VAR_LANE_ID], res[libsumo.VAR_LANEPOSITION],
                        res[libsumo.VAR_SPEED], x, y, res[libsumo.VAR_ANGLE],
                        res[libsumo.VAR_VEHICLECLASS])  # fmt: skip
    return out


TWIN_VARS = ("VAR_LANE_ID", "VAR_LANEPOSITION", "VAR_SPEED", "VAR_POSITION", "VAR_ANGLE",
             "VAR_VEHICLECLASS")  # fmt: skip


def subscribe_new(libsumo) -> None:
    codes = [getattr(libsumo, name) for name in TWIN_VARS]
    for vid in libsumo.simulation.getDepartedIDList():
        libsumo.vehicle.subscribe(vid, codes)
