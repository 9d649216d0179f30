"""One intersection's controller: a planner, its safe fixed plan, and the signal head.

Every tick the controller checks its observation.  Stale (older than ``stale_after_s``),
missing or implausible data switch it to the intersection's safe fixed plan, and it says so
(``mode`` and ``reason``); it returns to the planner after ``recover_after`` good
observations in a row.  Whatever the planner or the plan asks, the head keeps the change
safe.
"""

from __future__ import annotations

import logging
from typing import Protocol

from citybrain.signals.head import SignalHead
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.maxpressure import Decision
from citybrain.signals.observation import IntersectionObservation, implausible
from citybrain.signals.plans import FixedPlan
from citybrain.signals.safety import SafetyRules

log = logging.getLogger("citybrain.signals")


class Planner(Protocol):
    name: str

    def decide(self, obs: IntersectionObservation, head: SignalHead) -> Decision: ...


class FixedPlanPlanner:
    """Follows a fixed plan by the clock: asks for the stage the plan shows now."""

    name = "fixed-plan"

    def __init__(self, intersection: SignalIntersection, rules: SafetyRules, plan: FixedPlan):
        plan.validate(intersection, rules)
        self.intersection = intersection
        self.rules = rules
        self.plan = plan

    def phase_at(self, t: float) -> int:
        k, into = self.plan.stage_at(t, self.intersection, self.rules)
        stage = self.plan.stages[k]
        if into < stage.green_s:
            return stage.phase
        return self.plan.stages[(k + 1) % len(self.plan.stages)].phase

    def decide_at(self, t: float) -> Decision:
        return Decision(self.phase_at(t), "fixed plan")


class IntersectionController:
    def __init__(
        self,
        intersection: SignalIntersection,
        rules: SafetyRules,
        planner: Planner | None,
        fallback_plan: FixedPlan,
        *,
        stale_after_s: float = 5.0,
        recover_after: int = 3,
        initial_phase: int = 0,
    ) -> None:
        self.intersection = intersection
        self.rules = rules
        self.planner = planner
        self.fallback = FixedPlanPlanner(intersection, rules, fallback_plan)
        self.head = SignalHead(intersection, rules, initial_phase)
        self.stale_after_s = stale_after_s
        self.recover_after = recover_after
        self._good = recover_after
        self.mode = planner.name if planner else "fixed-plan"
        self.reason = "start"
        self.last_decision: Decision | None = None
        self._in_box: dict[int, int] = {}

    def set_fallback_plan(self, plan: FixedPlan) -> None:
        self.fallback = FixedPlanPlanner(self.intersection, self.rules, plan)

    def _distrust(self, now: float, obs: IntersectionObservation | None) -> str | None:
        if obs is None:
            return "no observation"
        if obs.intersection_id != self.intersection.id:
            return f"observation is for {obs.intersection_id}"
        age = now - obs.time_s
        if age > self.stale_after_s:
            return f"observation is {age:.0f} s old (stale after {self.stale_after_s:g} s)"
        return implausible(obs, self.intersection.incoming_lanes)

    def step(self, now: float, obs: IntersectionObservation | None) -> str:
        """Decide with what is known at ``now``; returns the state to show from now on."""
        if self.planner is None:
            decision = self.fallback.decide_at(now)
        else:
            problem = self._distrust(now, obs)
            self._in_box = obs.in_box if obs is not None and problem is None else {}
            if problem is not None:
                self._good = 0
                if self.mode != "fallback":
                    log.warning("%s: fixed plan fallback: %s", self.intersection.id, problem)
                self.mode, self.reason = "fallback", problem
            else:
                self._good += 1
                if self.mode == "fallback" and self._good >= self.recover_after:
                    log.info("%s: data good again, back to %s", self.intersection.id,
                             self.planner.name)  # fmt: skip
                    self.mode = self.planner.name
            if self.mode == "fallback":
                decision = self.fallback.decide_at(now)
            else:
                assert obs is not None
                decision = self.planner.decide(obs, self.head)
                self.reason = decision.reason
        self.last_decision = decision
        self.head.request(decision.phase)
        return self.head.state

    def tick(self, dt: float) -> None:
        self.head.tick(dt, self._in_box)
