"""citybrain's adaptive planner: actuated green extension with demand-weighted phase choice.

While the green phase still discharges a queue, or a moving road user will reach its stop
line within ``gap_s``, the green is extended (up to ``max_green_s``).  When it gaps out, the
next phase is the one with the most to serve: stopped road users, plus those arriving
before the change would complete, plus a weight on the longest wait so that a short queue
that has waited long is not starved.  With no demand anywhere else the green rests where
it is.  Everything used is what a stop-line camera sees within its range.
"""

from __future__ import annotations

from citybrain.signals.head import SignalHead
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.maxpressure import EMPTY, Decision, MaxPressurePlanner
from citybrain.signals.observation import JAM_SPACING_M, IntersectionObservation
from citybrain.signals.safety import SafetyRules


class AdaptivePlanner:
    name = "citybrain"

    def __init__(
        self,
        intersection: SignalIntersection,
        rules: SafetyRules,
        *,
        gap_s: float = 3.0,
        wait_weight_per_s: float = 0.05,
        max_red_s: float = 120.0,
        exit_weight: float = 0.0,
        yield_ratio: float = 0.0,
        count_all: bool = False,
        congested_share: float = 0.0,
    ) -> None:
        self.intersection = intersection
        self.rules = rules
        self.gap_s = gap_s
        self.wait_weight_per_s = wait_weight_per_s
        self.max_red_s = max_red_s
        self.exit_weight = exit_weight
        self.yield_ratio = yield_ratio
        self.count_all = count_all
        self.congested_share = congested_share
        self._pressure = MaxPressurePlanner(intersection, rules, max_red_s=max_red_s)
        n = len(intersection.green_phases)
        self._lanes = [intersection.phase_lanes(k) for k in range(n)]
        self._lane_sets = [frozenset(lanes) for lanes in self._lanes]
        self._exits = [
            tuple(dict.fromkeys(lk.to_lane for lk in intersection.phase_links(k) if lk.to_lane))
            for k in range(n)
        ]
        self._change_s = rules.yellow_s + rules.all_red_s

    def _busy(self, obs: IntersectionObservation, phase: int) -> bool:
        for lane in self._lanes[phase]:
            lo = obs.incoming.get(lane, EMPTY)
            # Moving road users only: a stopped one on a green lane is blocked (a permitted
            # turn waiting for a gap, a full exit) and extending the green will not move it.
            if lo.etas_s and lo.etas_s[0] <= self.gap_s:
                return True
        return False

    def _served(self, obs: IntersectionObservation, phase: int) -> float:
        """Road users the green is serving now: all of them on its lanes, minus blocked exits."""
        total = sum(obs.incoming.get(lane, EMPTY).vehicles for lane in self._lanes[phase])
        blocked = sum(obs.outgoing.get(lane, EMPTY).queue for lane in self._exits[phase])
        return total - self.exit_weight * blocked

    def _score(self, obs: IntersectionObservation, phase: int) -> float:
        horizon = self._change_s + self.gap_s
        score = 0.0
        longest = 0.0
        for lane in self._lanes[phase]:
            lo = obs.incoming.get(lane, EMPTY)
            if self.count_all:
                score += lo.vehicles
            else:
                score += lo.queue + sum(1 for eta in lo.etas_s if eta <= horizon)
            longest = max(longest, lo.max_wait_s)
        if score == 0:
            return 0.0
        blocked = sum(obs.outgoing.get(lane, EMPTY).queue for lane in self._exits[phase])
        return max(0.01, score - self.exit_weight * blocked) + self.wait_weight_per_s * longest

    def _congested(self, obs: IntersectionObservation) -> bool:
        """Queues fill a share of the sensed length on two or more phases' lanes: demand
        exceeds what the junction can serve, and throughput matters more than gaps."""
        if self.congested_share <= 0:
            return False
        full = set()
        for lane in self.intersection.incoming_lanes:
            lo = obs.incoming.get(lane, EMPTY)
            watched = lo.watched_m if lo.watched_m is not None else obs.range_m
            if lo.queue * JAM_SPACING_M >= self.congested_share * watched:
                full.add(lane)
        # Congested when two full lanes are never green together: they compete for time.
        return any(
            not any(a in lanes and b in lanes for lanes in self._lane_sets)
            for a in full
            for b in full
            if a < b
        )

    def decide(self, obs: IntersectionObservation, head: SignalHead) -> Decision:
        current = head.phase if head.phase is not None else head.next_phase
        assert current is not None
        if not head.can_switch():
            return Decision(current, "min green")
        if self._congested(obs):
            d = self._pressure.decide(obs, head)
            return Decision(d.phase, f"congested: {d.reason}")
        n = len(self.intersection.green_phases)
        scores = [self._score(obs, k) for k in range(n)]
        starving = [
            k for k in range(n)
            if k != current and scores[k] > 0 and head.red_for_s(k) >= self.max_red_s
        ]  # fmt: skip
        if starving:
            return Decision(max(starving, key=head.red_for_s), "anti-starvation")
        others = [k for k in range(n) if k != current and scores[k] > 0]
        if not others:
            return Decision(current, "rest in green")
        busy = self._busy(obs, current)
        best = max(others, key=lambda k: scores[k])
        if busy and head.green_elapsed_s < self.rules.max_green_s:
            if (
                self.yield_ratio <= 0
                or self._served(obs, current) >= self.yield_ratio * scores[best]
            ):
                return Decision(current, "extend")
            return Decision(best, "yield to demand")
        return Decision(best, "max green" if busy else "gap out")
