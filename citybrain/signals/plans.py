"""Fixed-time signal plans: a cycle of green stages with their transitions and an offset."""

from __future__ import annotations

from dataclasses import dataclass

from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.safety import SafetyRules, check_schedule, transition


@dataclass(frozen=True)
class Stage:
    phase: int
    green_s: float


@dataclass(frozen=True)
class FixedPlan:
    """A cyclic plan: each stage's green, then the transition into the next stage."""

    intersection_id: str
    stages: tuple[Stage, ...]
    offset_s: float = 0.0
    source: str = "config"  # where it came from: config, webster, shipped

    def states(self, intersection: SignalIntersection, rules: SafetyRules) -> list[tuple]:
        """One cycle as (state, seconds, phase), starting at the first stage's green."""
        out: list[tuple] = []
        n = len(self.stages)
        for k, stage in enumerate(self.stages):
            state = intersection.green_phases[stage.phase]
            out.append((state, stage.green_s, stage.phase))
            nxt = intersection.green_phases[self.stages[(k + 1) % n].phase]
            out.extend((s, d, None) for s, d in transition(state, nxt, rules))
        return out

    def cycle_s(self, intersection: SignalIntersection, rules: SafetyRules) -> float:
        return sum(e[1] for e in self.states(intersection, rules))

    def green_s_by_link(
        self, intersection: SignalIntersection, rules: SafetyRules
    ) -> dict[int, float]:
        """Seconds of each cycle that each link shows green (``G`` or ``g``)."""
        green = dict.fromkeys(range(intersection.n_links), 0.0)
        for state, seconds, _ in self.states(intersection, rules):
            for i, c in enumerate(state):
                if c in "Gg":
                    green[i] += seconds
        return green

    def stage_at(
        self, t: float, intersection: SignalIntersection, rules: SafetyRules
    ) -> tuple[int, float]:
        """(stage index, seconds into that stage's green-plus-transition) at time ``t``."""
        cycle = self.cycle_s(intersection, rules)
        pos = (t - self.offset_s) % cycle
        n = len(self.stages)
        for k, stage in enumerate(self.stages):
            nxt = intersection.green_phases[self.stages[(k + 1) % n].phase]
            here = intersection.green_phases[stage.phase]
            span = stage.green_s + sum(d for _, d in transition(here, nxt, rules))
            if pos < span:
                return k, pos
            pos -= span
        return n - 1, 0.0

    def validate(self, intersection: SignalIntersection, rules: SafetyRules) -> None:
        """Raise ``SafetyViolation``/``ValueError`` unless the plan is safe and complete."""
        if not self.stages:
            raise ValueError(f"plan for {intersection.id}: no stages")
        for stage in self.stages:
            if not 0 <= stage.phase < len(intersection.green_phases):
                raise ValueError(f"plan for {intersection.id}: no green phase {stage.phase}")
        served = {s.phase for s in self.stages}
        missing = sorted(set(range(len(intersection.green_phases))) - served)
        if missing:
            raise ValueError(
                f"plan for {intersection.id}: green phase(s) {missing} are never served"
            )
        cycle = self.states(intersection, rules)
        if len(self.stages) > 1 and self.cycle_s(intersection, rules) > rules.max_cycle_s + 1e-6:
            raise ValueError(
                f"plan for {intersection.id}: cycle {self.cycle_s(intersection, rules):g} s "
                f"is longer than max_cycle_s {rules.max_cycle_s:g}"
            )
        # Three cycles, so every stage's green is an inner run the checker measures.
        check_schedule(intersection, rules, cycle * 3)
