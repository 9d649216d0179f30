"""citybrain's adaptive planner: actuated green extension with demand-weighted phase choice.

While the green phase still serves moving traffic (a road user that can use the green
will reach its stop line within ``gap_s``), the green is extended up to ``max_green_s``.
When it gaps out, the next phase is the one with the most to serve: stopped road users,
plus those arriving before the change would complete, plus a weight on the longest wait so
that a short queue that has waited long is not starved.  A queue that fills the camera's
view may run out of sight, so it counts ``overflow_factor`` times.  A flowing green is cut
once someone elsewhere has waited ``patience_s``; with no demand elsewhere it rests where it
is; ``max_red_s`` bounds anyone's wait.  Movements whose exits are full back to the junction
(a stopped road user within ``blocked_within_m``) are not demand: their green would only
fill the junction box.

Demand is counted per movement, not per lane: a lane shared by a through movement and a
left turn is only partly served by a left-turn phase.  The split comes from the turning
counts the camera measures (road users leaving each lane by each movement), remembered
over ``share_memory_s``; until counts arrive, a lane's movements share it equally.  A
permitted movement (``g``, yielding to oncoming traffic) counts at ``permitted_weight``.
Everything used is what a stop-line camera sees within its range.
"""

from __future__ import annotations

import math

from citybrain.signals.head import SignalHead
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.maxpressure import EMPTY, Decision
from citybrain.signals.observation import JAM_SPACING_M, IntersectionObservation
from citybrain.signals.safety import SafetyRules


class AdaptivePlanner:
    name = "citybrain"

    def __init__(
        self,
        intersection: SignalIntersection,
        rules: SafetyRules,
        *,
        gap_s: float = 4.0,
        wait_weight_per_s: float = 0.2,
        max_red_s: float = 180.0,
        share_memory_s: float = 900.0,
        permitted_weight: float = 1.0,
        overflow_share: float = 0.8,
        overflow_factor: float = 3.0,
        patience_s: float = 60.0,
        blocked_within_m: float = 10.0,
    ) -> None:
        self.intersection = intersection
        self.rules = rules
        self.gap_s = gap_s
        self.wait_weight_per_s = wait_weight_per_s
        self.max_red_s = max_red_s
        self.share_memory_s = share_memory_s
        self.overflow_share = overflow_share
        self.overflow_factor = overflow_factor
        self.patience_s = patience_s
        self.blocked_within_m = blocked_within_m
        n = len(intersection.green_phases)
        self._lanes = [intersection.phase_lanes(k) for k in range(n)]
        self._lane_links: dict[str, list[int]] = {}
        for lk in intersection.links:
            if lk.from_lane and not lk.pedestrian:
                self._lane_links.setdefault(lk.from_lane, []).append(lk.index)
        # Per phase and lane: the exits its green movements lead to (spillback guard).
        self._exits = [
            {lane: tuple(lk.to_lane for lk in intersection.phase_links(k)
                         if lk.from_lane == lane and lk.to_lane)
             for lane in self._lanes[k]}
            for k in range(n)
        ]  # fmt: skip
        self._weight = [
            {lk.index: 1.0 if state[lk.index] == "G" else permitted_weight
             for lk in intersection.phase_links(k)}
            for k, state in enumerate(intersection.green_phases)
        ]  # fmt: skip
        self._counts = {lk.index: 1.0 for lk in intersection.links}  # a flat prior
        self._counts_at: float | None = None
        self._change_s = rules.yellow_s + rules.all_red_s

    # -- turning shares
    def _learn(self, obs: IntersectionObservation) -> None:
        if self._counts_at is not None and obs.time_s > self._counts_at:
            decay = math.exp(-(obs.time_s - self._counts_at) / self.share_memory_s)
            for link in self._counts:
                self._counts[link] *= decay
        self._counts_at = obs.time_s
        for link, n in obs.departures_by_link.items():
            if link in self._counts and n > 0:
                self._counts[link] += n

    def served_share(self, lane: str, phase: int) -> float:
        """The share of ``lane``'s road users that ``phase`` lets go (permitted discounted)."""
        links = self._lane_links.get(lane, ())
        total = sum(self._counts[k] for k in links)
        if total <= 0:
            return 0.0
        weights = self._weight[phase]
        return sum(self._counts[k] * weights.get(k, 0.0) for k in links) / total

    # -- demand
    def _blocked(self, obs: IntersectionObservation, phase: int, lane: str) -> bool:
        """Every exit of the lane's movements is full back to the junction: a green would
        only let road users into the box, where they block everyone else."""
        if self.blocked_within_m <= 0:
            return False
        exits = self._exits[phase].get(lane, ())
        for ex in exits:
            near = obs.outgoing.get(ex, EMPTY).stopped_from_junction_m
            if near is None or near > self.blocked_within_m:
                return False
        return bool(exits)

    def _busy(self, obs: IntersectionObservation, phase: int) -> bool:
        """Will someone who can use this green reach the stop line within ``gap_s``?"""
        expected = 0.0
        for lane in self._lanes[phase]:
            lo = obs.incoming.get(lane, EMPTY)
            arriving = sum(1 for eta in lo.etas_s if eta <= self.gap_s)
            if arriving and not self._blocked(obs, phase, lane):
                expected += arriving * self.served_share(lane, phase)
        return expected >= 0.5

    def _score(self, obs: IntersectionObservation, phase: int) -> float:
        horizon = self._change_s + self.gap_s
        score = 0.0
        longest = 0.0
        for lane in self._lanes[phase]:
            share = self.served_share(lane, phase)
            if share <= 0 or self._blocked(obs, phase, lane):
                continue
            lo = obs.incoming.get(lane, EMPTY)
            waiting = lo.queue + sum(1 for eta in lo.etas_s if eta <= horizon)
            watched = lo.watched_m if lo.watched_m is not None else obs.range_m
            if lo.queue * JAM_SPACING_M >= self.overflow_share * watched:
                # The queue runs out of sight: it is at least this long, likely longer, and
                # may be backing into the junction upstream.
                waiting *= self.overflow_factor
            score += share * waiting
            if lo.queue:
                longest = max(longest, lo.max_wait_s)
        if score < 0.5:
            return 0.0
        return score + self.wait_weight_per_s * longest

    def decide(self, obs: IntersectionObservation, head: SignalHead) -> Decision:
        self._learn(obs)
        current = head.phase if head.phase is not None else head.next_phase
        assert current is not None
        if not head.can_switch():
            return Decision(current, "min green")
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
            if self.patience_s <= 0 or self._longest_wait(obs, others) < self.patience_s:
                return Decision(current, "extend")
            return Decision(best, "waited long enough")
        return Decision(best, "max green" if busy else "gap out")

    def _longest_wait(self, obs: IntersectionObservation, phases: list[int]) -> float:
        return max(
            (obs.incoming.get(lane, EMPTY).max_wait_s for k in phases for lane in self._lanes[k]
             if self.served_share(lane, k) > 0),
            default=0.0,
        )  # fmt: skip
