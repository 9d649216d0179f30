"""Presence in scene zones over one aggregation interval.

Per zone (crosswalk, waiting area, intersection box, no-stopping area, ...) and interval:

- ``entered``: road users that came into the zone, each track once per visit;
- ``mean_present`` / ``max_present``: road users inside per frame;
- ``present``, ``stopped``, ``parked`` and ``longest_stay_s``: the state at the interval's
  last frame (pedestrians waiting at a crosswalk now, vehicles blocking the junction now, and
  for how long the longest-staying one has been there).

A road user is in a zone when the bottom centre of its box is; overlapping zones (a
crosswalk inside the intersection box) each count it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shapely import STRtree, points
from shapely.geometry import Polygon

from common.schemas import RoadUserClass, ZoneInterval
from rsu.detections import Detections
from rsu.motion import Motion
from rsu.scene import Zone

# Tracks unseen in a zone for this long have left it; a later return is a new visit.  Longer
# than a short occlusion, so a pedestrian hidden behind a bus is not counted twice.
LEAVE_AFTER_MS = 2_000


@dataclass
class _ZoneAcc:
    frames: int = 0
    present_sum: dict[str, int] = field(default_factory=dict)
    max_present: int = 0
    entered: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    stopped: int = 0
    parked: int = 0
    longest_stay_s: float | None = None


class ZoneWatcher:
    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        self._tree = STRtree([Polygon(zone.polygon) for zone in zones]) if zones else None
        self._classes = [{c.value for c in zone.classes} for zone in zones]
        # (zone index, track) -> (first seen inside, last seen inside), ms
        self._visits: dict[tuple[int, int], tuple[int, int]] = {}
        self._acc: list[_ZoneAcc] = []
        self.reset()

    def reset(self) -> None:
        self._acc = [_ZoneAcc() for _ in self.zones]

    def update(self, t_ms: int, detections: Detections, motion: Motion) -> None:
        if self._tree is None:
            return
        inside: list[list[int]] = [[] for _ in self.zones]
        names = [str(c) for c in detections.class_name.tolist()]
        if names:
            point_idx, zone_idx = self._tree.query(
                points(detections.bottom_centres()), predicate="within"
            )
            for p, z in zip(point_idx.tolist(), zone_idx.tolist(), strict=True):
                classes = self._classes[z]
                if not classes or names[p] in classes:
                    inside[z].append(p)
        tracks = detections.track_id.tolist() if detections.track_id is not None else None
        stationary = motion.stationary.tolist() if len(motion.stationary) else []
        parked = motion.parked.tolist() if len(motion.parked) else []
        for z, members in enumerate(inside):
            acc = self._acc[z]
            acc.frames += 1
            present: dict[str, int] = {}
            stays: list[float] = []
            for i in members:
                name = names[i]
                present[name] = present.get(name, 0) + 1
                if tracks is None:
                    continue
                key = (z, tracks[i])
                visit = self._visits.get(key)
                if visit is None or t_ms - visit[1] > LEAVE_AFTER_MS:
                    visit = (t_ms, t_ms)
                    acc.entered[name] = acc.entered.get(name, 0) + 1
                self._visits[key] = (visit[0], t_ms)
                stays.append((t_ms - visit[0]) / 1000.0)
            for name, n in present.items():
                acc.present_sum[name] = acc.present_sum.get(name, 0) + n
            acc.max_present = max(acc.max_present, len(members))
            acc.present = present  # the state at the interval's last frame
            acc.stopped = sum(stationary[i] and not parked[i] for i in members)
            acc.parked = sum(parked[i] for i in members)
            acc.longest_stay_s = round(max(stays), 1) if stays else None
        if len(self._visits) > 10_000:  # bounded memory: forget visits long over
            horizon = t_ms - 60_000
            self._visits = {k: v for k, v in self._visits.items() if v[1] >= horizon}

    def intervals(self) -> list[ZoneInterval]:
        result = []
        for zone, acc in zip(self.zones, self._acc, strict=True):
            frames = max(acc.frames, 1)
            result.append(
                ZoneInterval(
                    zone_id=zone.id,
                    kind=zone.kind,
                    approach=zone.approach,
                    entered={RoadUserClass(k): v for k, v in sorted(acc.entered.items())},
                    mean_present={
                        RoadUserClass(k): round(v / frames, 2)
                        for k, v in sorted(acc.present_sum.items())
                    },
                    max_present=acc.max_present,
                    present={RoadUserClass(k): v for k, v in sorted(acc.present.items())},
                    stopped=acc.stopped,
                    parked=acc.parked,
                    longest_stay_s=acc.longest_stay_s,
                )
            )
        return result
