"""Fixed-time plans from flows: Webster's cycle and the critical-lane green split (HCM).

For each phase the critical flow ratio is the highest lane flow over saturation flow among
the lanes it serves (a lane green in several phases shares its flow between them).  The
cycle is Webster's optimum ``(1.5 L + 5) / (1 - Y)``, bounded by what the minimum greens
need and by ``max_cycle_s``; effective green is split in proportion to the ratios, never
below a phase's minimum (pedestrian clearance included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.plans import FixedPlan, Stage
from citybrain.signals.safety import SafetyRules, transition

SATURATION_VPHPL = 1800.0  # through lane, passenger cars, HCM base 1900 less a typical 5%
MAX_DEGREE = 0.95  # Y at or above this: the cycle goes to its maximum


def critical_ratios(
    intersection: SignalIntersection,
    lane_flows_vph: Mapping[str, float],
    saturation_vphpl: float = SATURATION_VPHPL,
) -> list[float]:
    phases = range(len(intersection.green_phases))
    served_by: dict[str, int] = {}
    for k in phases:
        for lane in intersection.phase_lanes(k):
            served_by[lane] = served_by.get(lane, 0) + 1
    ratios = []
    for k in phases:
        lanes = intersection.phase_lanes(k)
        ratios.append(
            max(
                (max(0.0, float(lane_flows_vph.get(lane, 0.0))) / served_by[lane]
                 / saturation_vphpl for lane in lanes),
                default=0.0,
            )
        )  # fmt: skip
    return ratios


def webster_plan(
    intersection: SignalIntersection,
    rules: SafetyRules,
    lane_flows_vph: Mapping[str, float],
    *,
    saturation_vphpl: float = SATURATION_VPHPL,
    cycle_s: float | None = None,
    offset_s: float = 0.0,
) -> FixedPlan:
    """A safe fixed-time plan serving every green phase in order (``cycle_s`` forces it)."""
    n = len(intersection.green_phases)
    ratios = critical_ratios(intersection, lane_flows_vph, saturation_vphpl)
    min_greens = [rules.phase_min_green_s(intersection, k) for k in range(n)]
    lost = sum(
        sum(d for _, d in transition(intersection.green_phases[k],
                                     intersection.green_phases[(k + 1) % n], rules))
        for k in range(n)
    )  # fmt: skip
    shortest = lost + sum(min_greens)
    longest = max(rules.max_cycle_s, shortest)
    total = sum(ratios)
    if cycle_s is None:
        cycle_s = longest if total >= MAX_DEGREE else (1.5 * lost + 5.0) / (1.0 - total)
    cycle_s = min(max(cycle_s, shortest), longest)
    greens = _split(cycle_s - lost, ratios, min_greens, rules.max_green_s)
    # Tenths of a second, rounded down so the cycle never grows past its bound.
    stages = tuple(
        Stage(k, max(min_greens[k], math.floor(g * 10 + 1e-9) / 10)) for k, g in enumerate(greens)
    )
    return FixedPlan(intersection.id, stages, offset_s=offset_s, source="webster")


def _split(effective: float, ratios: list[float], mins: list[float], max_green: float) -> list:
    """Green times summing to ``effective``, proportional to ``ratios``, within [min, max]."""
    n = len(ratios)
    weights = ratios if sum(ratios) > 0 else [1.0] * n
    greens = list(mins)
    fixed = [False] * n
    # Water-filling: give the spare proportionally; phases that hit a bound are pinned.
    for _ in range(n + 1):
        spare = effective - sum(greens[k] for k in range(n) if fixed[k])
        free = [k for k in range(n) if not fixed[k]]
        if not free:
            break
        w = sum(weights[k] for k in free) or float(len(free))
        changed = False
        for k in free:
            g = spare * (weights[k] / w if sum(weights[j] for j in free) > 0 else 1 / len(free))
            if g < mins[k]:
                greens[k], fixed[k], changed = mins[k], True, True
            elif g > max(max_green, mins[k]):
                greens[k], fixed[k], changed = max(max_green, mins[k]), True, True
            else:
                greens[k] = g
        if not changed:
            break
    # Pinning at both bounds can overshoot (two phases capped at max green while a third
    # takes its minimum): take the excess back from the greens above their minimum.
    excess = sum(greens) - effective
    above = sum(g - m for g, m in zip(greens, mins, strict=True))
    if excess > 1e-9 and above > 0:
        greens = [g - excess * (g - m) / above for g, m in zip(greens, mins, strict=True)]
    return greens
