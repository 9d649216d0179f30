"""The digital twin's loop through the real bus: virtual RSUs -> Redis -> ingest -> planners.

``TwinBus`` publishes every virtual RSU's messages with the same producer camera RSUs use,
runs a real ``citybrain ingest`` worker process on them, and builds each intersection's
observation from what ingest stored: the latest frame of each approach's camera and of the
junction camera (road users with lane, ground position and speed).  The distance to the stop
line comes from the lane geometry, as it would from a camera's scene calibration; waiting
times from the track ids seen stopped in consecutive frames; departures from the track ids
seen near a stop line that have left its lane in the next frame, and their signal link from
where the junction camera sees them next (in the box, or on an exit).  Road users in the box
by link (for the clearance hold) and the exits' queues (for the full-exit guard) come from
the junction camera too.  Nothing the planners see bypasses the bus.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import redis

from citybrain.config import CitybrainConfig
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.observation import IntersectionObservation, LaneObservation
from citybrain.sim.virtual_rsu import HALTING_MPS, VirtualRsus
from citybrain.state import TrafficState
from common.bus import BusConfig, StreamProducer

DEPART_WITHIN_M = 30.0  # farther than a road user moves between two frames at 1 Hz


class TwinBus:
    def __init__(
        self,
        redis_url: str,
        net,
        intersections: dict[str, SignalIntersection],
        *,
        box_lanes: dict[str, dict[str, int]] | None = None,
        range_m: float,
        miss_rate: float = 0.0,
        noise_m: float = 0.0,
        seed: int = 0,
        sync_timeout_s: float = 1.0,
        epoch_ms: int | None = None,
    ) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.config = CitybrainConfig.model_validate(
            {"bus": {"redis_url": redis_url}, "api": {"auth": False}}
        )
        self.state = TrafficState(self.client, self.config)
        partitions = self.config.bus.partitions
        self.producer = StreamProducer(self.client, BusConfig(partitions=partitions))
        tls_incoming = {iid: inter.incoming_lanes for iid, inter in intersections.items()}
        tls_outgoing = {iid: inter.outgoing_lanes for iid, inter in intersections.items()}
        self.rsus = VirtualRsus(net, tls_incoming, tls_box=box_lanes, tls_outgoing=tls_outgoing,
                                range_m=range_m, miss_rate=miss_rate, noise_m=noise_m,
                                seed=seed)  # fmt: skip
        self.range_m = range_m
        self.sync_timeout_s = sync_timeout_s
        self.epoch_ms = int(time.time() * 1000) if epoch_ms is None else epoch_ms
        self.tls_incoming = tls_incoming
        self.tls_outgoing = tls_outgoing
        self._box = box_lanes or {}  # tls -> internal lane -> link index
        # tls -> (incoming lane, exit lane) -> link index: a departure seen on its exit lane,
        # not in the box (at 1 Hz a car can cross a box between two frames)
        self._link_of = {
            iid: {(lk.from_lane, lk.to_lane): lk.index for lk in inter.links if not lk.pedestrian}
            for iid, inter in intersections.items()
        }
        self._stop_xy = {}
        for lanes in tls_incoming.values():
            for lane in lanes:
                self._stop_xy[lane] = net.getLane(lane).getShape()[-1][:2]
        self._start_xy = {}  # exits: distances are measured from the junction
        self._exit_watched_m = {}
        for lanes in tls_outgoing.values():
            for lane in lanes:
                self._start_xy[lane] = net.getLane(lane).getShape()[0][:2]
                self._exit_watched_m[lane] = min(range_m, net.getLane(lane).getLength())
        self._stopped_since: dict[int, float] = {}
        # Departures: a track seen near a stop line that is no longer on that lane in the
        # next frame has crossed it.  Each track departs a lane once, even if a missed
        # detection made it look gone for a frame.
        self._near_line: dict[int, str] = {}
        self._departed: dict[tuple[int, str], float] = {}
        self.published = 0
        self.sync_waits = 0
        self._frames: dict | None = None  # every camera's frame of this step, once stored
        self._step_ms = 0  # capture time of the frames this step published
        self.undrained = 0  # entries ingest had not acked when the twin stopped
        self._tmp = tempfile.TemporaryDirectory(prefix="cb-twin-")
        env = dict(os.environ, HISTORY_URL=f"sqlite:///{Path(self._tmp.name) / 'history.db'}")
        self._ingest = subprocess.Popen(
            [sys.executable, "-m", "citybrain.cli", "ingest", "--redis-url", redis_url,
             "--consumer", "twin-ingest", "--exit-with-parent"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def drain(self, timeout_s: float = 30.0) -> int:
        """Wait until ingest has read and acked everything published; what is left."""
        deadline = time.monotonic() + timeout_s
        while True:
            lag = self.state.ingest_lag()
            left = lag["unread"] + lag["pending"]
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(0.02)

    def close(self) -> None:
        self.undrained = self.drain()
        self._ingest.terminate()
        try:
            self._ingest.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._ingest.kill()
        self._tmp.cleanup()
        self.client.close()

    def publish(self, sim_s: float, vehicles: dict[str, tuple], interval_s: float) -> None:
        now_ms = self.epoch_ms + int(sim_s * 1000)
        self._step_ms = now_ms
        messages = self.rsus.step(now_ms, vehicles)
        if interval_s > 0 and round(sim_s * 1000) % round(interval_s * 1000) == 0:
            messages += self.rsus.aggregates(now_ms - int(interval_s * 1000), interval_s, vehicles)
        self.producer.publish(messages)
        self.published += len(messages)
        self._sync()

    def _sync(self) -> None:
        """Wait (briefly) until ingest has stored this step's frame of every camera, so the
        planners see the same frames in every run of a seed: a reproducible loop.  (Ingest
        reads a step's frames in batches across partitions: one camera's frame being stored
        says nothing about the others'.)"""
        self._frames = None
        if not self.rsus.cameras:
            return
        # The first step also waits for the ingest process to start (seconds on a busy box).
        timeout = self.sync_timeout_s if self.published > len(self.rsus.cameras) * 2 else 60.0
        deadline = time.monotonic() + timeout
        # Poll the frames' capture times only (cheap); read the frames once they are all in.
        cameras = [(cam.rsu_id, "cam0") for cam in self.rsus.cameras]
        step_ms = self._step_ms
        while True:
            times = self.state.latest_frame_times(cameras)
            if all(times.get(cam, -1) >= step_ms for cam in cameras):
                self._frames = self.state.latest_frames(cameras)
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        self.sync_waits += 1

    def observe(self, sim_s: float) -> dict[str, IntersectionObservation]:
        by_tls: dict[str, list] = defaultdict(list)
        for cam in self.rsus.cameras:
            by_tls[cam.intersection].append(cam)
        frames = self._frames
        if frames is None:  # the sync timed out: what is there now
            frames = self.state.latest_frames((cam.rsu_id, "cam0") for cam in self.rsus.cameras)
        seen: dict[str, tuple] = {}  # tls -> (incoming figures, exit figures, in box, newest)
        on_lane: dict[int, str] = {}
        near_line: dict[int, str] = {}
        past_line: dict[int, tuple[str, int]] = {}  # track -> (tls, link) in box or on an exit
        on_exit: dict[int, tuple[str, str]] = {}  # track -> (tls, exit lane)
        for tls, cams in by_tls.items():
            lanes: dict[str, list] = {lane: [0, 0, 0.0, [], 0.0] for lane in self.tls_incoming[tls]}
            # exit lane -> [road users, stopped, speed sum, nearest stopped from the junction]
            exits: dict[str, list] = {
                lane: [0, 0, 0.0, math.inf] for lane in self.tls_outgoing.get(tls, ())
            }
            box = self._box.get(tls, {})
            in_box: dict[int, int] = defaultdict(int)
            newest = -math.inf
            for cam in cams:
                frame = frames.get((cam.rsu_id, "cam0"))
                if not frame:
                    continue
                newest = max(newest, (frame["captured_at_ms"] - self.epoch_ms) / 1000.0)
                for obj in frame["objects"]:
                    lane = obj.get("lane_id")
                    tid = obj.get("track_id")
                    link = box.get(lane)
                    if link is not None:
                        in_box[link] += 1
                        past_line[tid] = (tls, link)
                        continue
                    g = obj.get("ground")
                    if g is None:
                        continue
                    speed = obj.get("speed_mps") or 0.0
                    if lane in exits:
                        sx, sy = self._start_xy[lane]
                        e = exits[lane]
                        e[0] += 1
                        e[2] += speed
                        if speed < HALTING_MPS:
                            e[1] += 1
                            e[3] = min(e[3], math.hypot(g["x"] - sx, g["y"] - sy))
                        on_exit[tid] = (tls, lane)
                        continue
                    if lane not in lanes:
                        continue
                    sx, sy = self._stop_xy[lane]
                    dist = math.hypot(g["x"] - sx, g["y"] - sy)
                    a = lanes[lane]
                    a[0] += 1
                    a[4] += speed
                    on_lane[tid] = lane
                    if dist <= DEPART_WITHIN_M:
                        near_line[tid] = lane
                    if speed < HALTING_MPS:
                        a[1] += 1
                        since = self._stopped_since.setdefault(tid, sim_s)
                        a[2] = max(a[2], sim_s - since)
                    else:
                        self._stopped_since.pop(tid, None)
                        a[3].append(dist / speed)
            if newest == -math.inf:
                continue  # nothing arrived yet: the controller will say "no observation"
            seen[tls] = lanes, exits, dict(in_box), newest
        for tid, (tls, exit_lane) in on_exit.items():
            if tid not in past_line:
                came_from = self._near_line.get(tid)
                link = self._link_of.get(tls, {}).get((came_from, exit_lane))
                if link is not None:
                    past_line[tid] = (tls, link)
        departures, by_link = self._departures(sim_s, on_lane, near_line, past_line)
        out = {}
        for tls, (lanes, exits, in_box, newest) in seen.items():
            incoming = {
                lane: LaneObservation(vehicles=a[0], queue=a[1], max_wait_s=a[2],
                                      etas_s=tuple(sorted(a[3])),
                                      mean_speed_mps=a[4] / a[0] if a[0] else None,
                                      departures=departures.get(lane, 0))
                for lane, a in lanes.items()
            }  # fmt: skip
            outgoing = {
                lane: LaneObservation(
                    vehicles=e[0], queue=e[1], mean_speed_mps=e[2] / e[0] if e[0] else None,
                    watched_m=self._exit_watched_m[lane],
                    stopped_from_junction_m=e[3] if e[3] != math.inf else None,
                )
                for lane, e in exits.items()
            }  # fmt: skip
            out[tls] = IntersectionObservation(
                tls, newest, self.range_m, incoming, outgoing, in_box, by_link.get(tls, {})
            )
        return out

    def _departures(
        self,
        sim_s: float,
        on_lane: dict[int, str],
        near_line: dict[int, str],
        past_line: dict[int, tuple[str, int]],
    ) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
        """Per lane, the tracks near its stop line last frame that have left it now; and per
        intersection, by signal link, those of them now seen in the box or on an exit."""
        out: dict[str, int] = defaultdict(int)
        by_link: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for tid, lane in self._near_line.items():
            if on_lane.get(tid) != lane and (tid, lane) not in self._departed:
                self._departed[(tid, lane)] = sim_s
                out[lane] += 1
                where = past_line.get(tid)
                if where is not None:
                    by_link[where[0]][where[1]] += 1
        self._near_line = near_line
        if len(self._departed) > 50_000:  # forget departures long past
            self._departed = {k: t for k, t in self._departed.items() if sim_s - t < 600}
        return out, {tls: dict(links) for tls, links in by_link.items()}
