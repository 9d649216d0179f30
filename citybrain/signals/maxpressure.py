"""Max-pressure control (Varaiya 2013) with min/max green and anti-starvation.

The pressure of a phase is the sum over its green links of (road users waiting to enter)
minus (road users already queued on the exit), both counted over the whole sensed length
of the approach, not only the stop-line lane: counting only the last lane lets queues
spill back unseen.  After the minimum green the head is asked for the phase of highest
pressure; a phase that has waited ``max_red_s`` with demand goes first, and a green that
has reached ``max_green_s`` yields to any other phase with demand.
"""

from __future__ import annotations

from dataclasses import dataclass

from citybrain.signals.head import SignalHead
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.observation import IntersectionObservation, LaneObservation
from citybrain.signals.safety import SafetyRules

EMPTY = LaneObservation()


@dataclass(frozen=True)
class Decision:
    phase: int
    reason: str


class MaxPressurePlanner:
    name = "maxpressure"

    def __init__(
        self,
        intersection: SignalIntersection,
        rules: SafetyRules,
        *,
        max_red_s: float = 180.0,
    ) -> None:
        self.intersection = intersection
        self.rules = rules
        self.max_red_s = max_red_s
        self._phase_links = [
            tuple((lk.from_lane, lk.to_lane) for lk in intersection.phase_links(k) if lk.from_lane)
            for k in range(len(intersection.green_phases))
        ]

    def demand(self, obs: IntersectionObservation, phase: int) -> int:
        lanes = {f for f, _ in self._phase_links[phase]}
        return sum(obs.incoming.get(lane, EMPTY).vehicles for lane in lanes)

    def pressure(self, obs: IntersectionObservation, phase: int) -> float:
        total = 0.0
        for f, t in self._phase_links[phase]:
            total += obs.incoming.get(f, EMPTY).vehicles - obs.outgoing.get(t, EMPTY).queue
        return total

    def decide(self, obs: IntersectionObservation, head: SignalHead) -> Decision:
        current = head.phase if head.phase is not None else head.next_phase
        assert current is not None
        if not head.can_switch():
            return Decision(current, "min green")
        starving = [
            k
            for k in range(len(self.intersection.green_phases))
            if k != current and head.red_for_s(k) >= self.max_red_s and self.demand(obs, k) > 0
        ]
        if starving:
            return Decision(max(starving, key=head.red_for_s), "anti-starvation")
        scores = [self.pressure(obs, k) for k in range(len(self.intersection.green_phases))]
        best = max(range(len(scores)), key=lambda k: (scores[k], k == current))
        if best == current and head.green_elapsed_s >= self.rules.max_green_s:
            others = [k for k in range(len(scores)) if k != current and self.demand(obs, k) > 0]
            if others:
                return Decision(max(others, key=lambda k: scores[k]), "max green")
        return Decision(best, "pressure")
