"""Coordination along an artery: a common cycle and offsets for a green wave.

A platoon released at the start of one intersection's main green reaches the next after
``distance / speed``; the next intersection's main green should start then.  All
intersections of the artery run the longest of their cycles (shorter plans are stretched,
the extra green shared in proportion), and each offset follows from the one upstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.plans import FixedPlan, Stage
from citybrain.signals.safety import SafetyRules, transition


@dataclass(frozen=True)
class Artery:
    intersections: tuple[str, ...]  # in the direction of the wave
    distances_m: tuple[float, ...]  # between consecutive intersections
    speed_mps: float
    main_phases: tuple[int, ...]  # the phase carrying the artery, per intersection

    def __post_init__(self) -> None:
        n = len(self.intersections)
        if n < 2:
            raise ValueError("an artery needs at least two intersections")
        if len(self.distances_m) != n - 1 or len(self.main_phases) != n:
            raise ValueError(
                f"artery of {n} intersections needs {n - 1} distances and {n} main phases"
            )
        if self.speed_mps <= 0 or any(d <= 0 for d in self.distances_m):
            raise ValueError("artery speed and distances must be positive")


def stretch(
    plan: FixedPlan, cycle_s: float, inter: SignalIntersection, rules: SafetyRules
) -> FixedPlan:
    """``plan`` with its greens lengthened in proportion so that its cycle is ``cycle_s``."""
    extra = cycle_s - plan.cycle_s(inter, rules)
    if extra <= 1e-9:
        return plan
    total = sum(s.green_s for s in plan.stages)
    stages = tuple(Stage(s.phase, s.green_s + extra * s.green_s / total) for s in plan.stages)
    return replace(plan, stages=stages)


def main_green_start(
    plan: FixedPlan, phase: int, inter: SignalIntersection, rules: SafetyRules
) -> float:
    """Seconds from the cycle start to the start of ``phase``'s green."""
    t = 0.0
    n = len(plan.stages)
    for k, stage in enumerate(plan.stages):
        if stage.phase == phase:
            return t
        nxt = inter.green_phases[plan.stages[(k + 1) % n].phase]
        t += stage.green_s + sum(
            d for _, d in transition(inter.green_phases[stage.phase], nxt, rules)
        )
    raise ValueError(f"plan for {inter.id} never serves phase {phase}")


def green_wave(
    artery: Artery,
    plans: Mapping[str, FixedPlan],
    inters: Mapping[str, SignalIntersection],
    rules: Mapping[str, SafetyRules],
) -> dict[str, FixedPlan]:
    """Plans of the artery's intersections on one cycle, offset for a green wave."""
    ids: Sequence[str] = artery.intersections
    cycle = max(plans[i].cycle_s(inters[i], rules[i]) for i in ids)
    out = {i: stretch(plans[i], cycle, inters[i], rules[i]) for i in ids}
    first = ids[0]
    wave = out[first].offset_s + main_green_start(out[first], artery.main_phases[0],
                                                  inters[first], rules[first])  # fmt: skip
    for k in range(1, len(ids)):
        wave += artery.distances_m[k - 1] / artery.speed_mps
        iid = ids[k]
        start = main_green_start(out[iid], artery.main_phases[k], inters[iid], rules[iid])
        out[iid] = replace(out[iid], offset_s=round((wave - start) % cycle, 1))
    return out
