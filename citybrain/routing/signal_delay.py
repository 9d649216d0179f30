"""Delay at signals per movement, measured from what the cameras see.

By Little's law, the mean time a road user spends in a camera's view of a lane is the mean
number in view divided by the rate at which road users leave the lane: ``W = L / lambda``.
Both are what an approach camera measures every frame (the road users on the lane, and
those crossing the stop line); less the time to drive through the view at the speed limit,
that is the delay.  It needs no model of how the signal is run: it holds for fixed plans
and adaptive control alike, counts creeping queues as well as stopped ones, and shows a
left-turn lane that backs up while the through lanes flow.

Both means are exponential moving averages over ``tau_s``: a queue seen in one frame says
little about the wait a minute later, and routes that react to every frame herd vehicles
from one street to the next.  A movement served by several lanes gets the mean of its
lanes; a lane nobody has used yet gets no delay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.observation import IntersectionObservation

Movement = tuple[str, str]  # (incoming edge, outgoing edge)
MIN_RATE_PER_S = 1 / 300  # a queue that never moves still counts as a (long) finite wait
MAX_DELAY_S = 600.0
QUEUED_SPACING_M = 7.5  # a stopped car and the gap to the next
FREE_SPEED_MPS = 13.9  # 50 km/h where a lane's speed limit is not known
FULL_VIEW = 0.8  # a queue this long in the view runs past it


class MeasuredDelays:
    """Per lane: the mean time road users spend in the camera's view, by Little's law
    (road users in view / departures per second), less the time to drive through it at
    the speed limit.  Stopped and creeping road users count alike.

    ``lane_length_m``/``lane_speed_mps``: where stopped road users fill a camera's view,
    the queue runs on past it, and the lane is taken as queued over its whole length (the
    count scaled by length / view)."""

    def __init__(
        self,
        tau_s: float = 120.0,
        lane_length_m: Mapping[str, float] | None = None,
        lane_speed_mps: Mapping[str, float] | None = None,
    ) -> None:
        if tau_s <= 0:
            raise ValueError(f"tau_s must be > 0, got {tau_s}")
        self.tau_s = tau_s
        self.lane_length_m = lane_length_m or {}
        self.lane_speed_mps = lane_speed_mps or {}
        # lane -> [road users in view, departures per second, free-flow seconds in view]
        self._mean: dict[str, list[float]] = {}
        self._at: float | None = None

    def update(self, now_s: float, observations: Mapping[str, IntersectionObservation]) -> None:
        dt = 0.0 if self._at is None else now_s - self._at
        if dt <= 0 and self._at is not None:
            return  # the same instant again: nothing new
        self._at = now_s
        keep = math.exp(-dt / self.tau_s)
        for obs in observations.values():
            for lane, lo in obs.incoming.items():
                rate = lo.departures / dt if dt > 0 else 0.0
                count = float(lo.vehicles)
                view = lo.watched_m if lo.watched_m is not None else obs.range_m
                length = self.lane_length_m.get(lane, 0.0)
                extent = min(view, length) if length > 0 else view
                if 0 < view < length and lo.queue * QUEUED_SPACING_M >= FULL_VIEW * view:
                    count *= length / view
                    extent = length
                free = extent / self.lane_speed_mps.get(lane, FREE_SPEED_MPS)
                mean = self._mean.get(lane)
                if mean is None:
                    self._mean[lane] = [count, rate, free]
                    continue
                for k, x in enumerate((count, rate, free)):
                    mean[k] = keep * mean[k] + (1 - keep) * x

    def lane_delay_s(self, lane: str) -> float:
        mean = self._mean.get(lane)
        if mean is None or mean[0] <= 0:
            return 0.0
        in_view = mean[0] / max(mean[1], MIN_RATE_PER_S)
        return min(MAX_DELAY_S, max(0.0, in_view - mean[2]))

    def movement_delays(self, lanes_of: Mapping[Movement, Iterable[str]]) -> dict[Movement, float]:
        """Seconds a road user joining each movement waits, the mean over its lanes."""
        out = {}
        for m, lanes in lanes_of.items():
            waits = [self.lane_delay_s(lane) for lane in lanes]
            out[m] = sum(waits) / len(waits)
        return out


def movement_lanes(
    intersections: Iterable[SignalIntersection], lane_edge: Mapping[str, str]
) -> dict[Movement, tuple[str, ...]]:
    """The incoming lanes that serve each movement (edge -> edge) of these signals."""
    lanes_of: dict[Movement, dict[str, None]] = {}
    for inter in intersections:
        for lk in inter.links:
            if lk.pedestrian or not lk.from_lane or not lk.to_lane:
                continue
            movement = (lane_edge[lk.from_lane], lane_edge[lk.to_lane])
            lanes_of.setdefault(movement, {})[lk.from_lane] = None
    return {m: tuple(lanes) for m, lanes in lanes_of.items()}
