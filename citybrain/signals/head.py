"""The signal head: the one place where signal states change.

Planners only *request* a green phase.  The head grants the request when the current
green has lasted its minimum, then runs yellow and all-red for the links that lose their
green before the new phase starts.  Requests made too early or mid-transition are not
queued: the planner asks again next tick with fresher data.  Every state the head emits
is therefore safe by construction, and ``recent_schedule`` lets a test prove it with
``safety.check_schedule``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.safety import SafetyRules, all_red_state, transition

EPS = 1e-6


@dataclass(frozen=True)
class SignalStatus:
    """SPaT-like snapshot: what shows now and when it can next change."""

    state: str
    phase: int | None  # green phase shown, None during a change
    next_phase: int | None  # phase being changed to
    green_elapsed_s: float
    min_end_s: float  # seconds until the earliest possible change
    in_transition: bool


class SignalHead:
    """Runs one intersection's signals in ticks; safe whatever the planner asks."""

    def __init__(
        self,
        intersection: SignalIntersection,
        rules: SafetyRules,
        initial_phase: int = 0,
        history: int = 4096,
    ) -> None:
        self.intersection = intersection
        self.rules = rules
        self._min_green = [
            rules.phase_min_green_s(intersection, k) for k in range(len(intersection.green_phases))
        ]
        self.phase: int | None = initial_phase
        self.next_phase: int | None = None
        self.state = intersection.green_phases[initial_phase]
        self.green_elapsed_s = 0.0
        self.red_since: list[float] = [0.0] * len(intersection.green_phases)
        self._steps: list[tuple[str, float]] = []
        self._step_left = 0.0
        self._now = 0.0
        self._schedule: deque[tuple[str, float, int | None]] = deque(maxlen=history)
        self._foes: dict[int, set[int]] = {}
        for i, j in intersection.conflicts:
            self._foes.setdefault(i, set()).add(j)
            self._foes.setdefault(j, set()).add(i)
        self._from_state = self.state
        self._held_s = 0.0
        self.clearance_holds = 0  # changes that waited for the junction box to clear

    @property
    def in_transition(self) -> bool:
        return self.phase is None

    def can_switch(self) -> bool:
        return self.phase is not None and self.green_elapsed_s + EPS >= self._min_green[self.phase]

    def request(self, phase: int) -> bool:
        """Ask for ``phase``; True when the change starts (or it is already green)."""
        if not 0 <= phase < len(self.intersection.green_phases):
            raise ValueError(f"intersection {self.intersection.id}: no green phase {phase}")
        if phase == self.phase:
            return True
        if not self.can_switch():
            return False
        current = self.intersection.green_phases[self.phase]
        target = self.intersection.green_phases[phase]
        self._steps = transition(current, target, self.rules)
        self._from_state = current
        self._held_s = 0.0
        self.red_since[self.phase] = self._now
        self.next_phase = phase
        if not self._steps:  # the two phases differ only in links that stay green
            self._enter(phase)
            return True
        self.phase = None
        self.state, self._step_left = self._steps.pop(0)
        return True

    def _enter(self, phase: int) -> None:
        self.phase = phase
        self.next_phase = None
        self.state = self.intersection.green_phases[phase]
        self.green_elapsed_s = 0.0

    def tick(self, dt: float, in_box: Mapping[int, int] | None = None) -> str:
        """Advance by ``dt`` seconds (the state shown during them was ``self.state``).

        ``in_box``: road users inside the junction by link, as last seen; a change does
        not complete while any of them is on a link conflicting with the coming green
        (all-red is held, up to ``max_clearance_hold_s``).
        """
        self._record(self.state, dt, self.phase)
        self._now += dt
        if self.phase is not None:
            self.green_elapsed_s += dt
            return self.state
        self._step_left -= dt
        while self._step_left <= EPS and self.phase is None:
            if self._steps:
                self.state, left = self._steps.pop(0)
                self._step_left += left
                continue
            assert self.next_phase is not None
            target = self.intersection.green_phases[self.next_phase]
            if self._held_s < self.rules.max_clearance_hold_s and self._box_blocks(target, in_box):
                if self._held_s == 0:
                    self.clearance_holds += 1
                self.state = all_red_state(self._from_state, target)
                self._held_s += dt
                self._step_left = dt
                break
            self._enter(self.next_phase)
        return self.state

    def _box_blocks(self, target: str, in_box: Mapping[int, int] | None) -> bool:
        if not in_box:
            return False
        holding = all_red_state(self._from_state, target)
        turning_green = (j for j, c in enumerate(target) if c in "Gg" and holding[j] not in "Gg")
        return any(in_box.get(i, 0) > 0 for j in turning_green for i in self._foes.get(j, ()))

    def _record(self, state: str, dt: float, phase: int | None) -> None:
        last = self._schedule[-1] if self._schedule else None
        if last is not None and last[0] == state and last[2] == phase:
            self._schedule[-1] = (state, last[1] + dt, phase)
        else:
            self._schedule.append((state, dt, phase))

    def recent_schedule(self) -> list[tuple[str, float, int | None]]:
        """The last states shown, as (state, seconds, green phase or None), for checks."""
        return list(self._schedule)

    def red_for_s(self, phase: int) -> float:
        """How long ``phase`` has waited since its last green (0 while green)."""
        if phase == self.phase:
            return 0.0
        return self._now - self.red_since[phase]

    def status(self) -> SignalStatus:
        if self.phase is not None:
            min_end = max(0.0, self._min_green[self.phase] - self.green_elapsed_s)
        else:
            min_end = self._step_left + sum(d for _, d in self._steps)
        return SignalStatus(
            state=self.state,
            phase=self.phase,
            next_phase=self.next_phase,
            green_elapsed_s=self.green_elapsed_s,
            min_end_s=min_end,
            in_transition=self.phase is None,
        )
