"""Signal timing rules and the checks that every plan and every phase change passes.

The rules are the ones a traffic engineer signs off: a green lasts at least ``min_green_s``
(longer where it serves a pedestrian crossing: walk time plus crossing length at walking
speed); a green always ends in ``yellow_s`` of yellow; after a link's yellow, no conflicting
link turns green for ``all_red_s``.  ``check_schedule`` proves a whole sequence of signal
states obeys them; the signal head (``head.py``) builds its transitions from them, and the
tests run both against random intersections.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from citybrain.signals.intersection import GREEN, SignalIntersection, check_state

EPS = 1e-6


class SafetyViolation(ValueError):
    """A signal schedule breaks a timing rule; the message names the rule, link and time."""


@dataclass(frozen=True)
class SafetyRules:
    """Timing constraints of one intersection (seconds, metres per second)."""

    min_green_s: float = 5.0
    max_green_s: float = 60.0
    yellow_s: float = 3.0
    all_red_s: float = 1.0
    ped_walk_s: float = 7.0
    ped_speed_mps: float = 1.2
    max_cycle_s: float = 150.0
    # All-red is held past all_red_s while road users on conflicting links are still in the
    # junction box, up to this much longer.
    max_clearance_hold_s: float = 6.0

    def __post_init__(self) -> None:
        if self.min_green_s < 1:
            raise ValueError(f"min_green_s must be >= 1 s, got {self.min_green_s}")
        if self.yellow_s < 2:
            raise ValueError(f"yellow_s must be >= 2 s, got {self.yellow_s}")
        if self.all_red_s < 0:
            raise ValueError(f"all_red_s must be >= 0 s, got {self.all_red_s}")
        if self.max_green_s < self.min_green_s:
            raise ValueError(
                f"max_green_s ({self.max_green_s}) is below min_green_s ({self.min_green_s})"
            )
        if self.ped_speed_mps <= 0:
            raise ValueError(f"ped_speed_mps must be > 0, got {self.ped_speed_mps}")

    def ped_clearance_s(self, crossing_length_m: float) -> float:
        return crossing_length_m / self.ped_speed_mps

    def phase_min_green_s(self, intersection: SignalIntersection, phase: int) -> float:
        """Min green of ``phase``: the general minimum, or walk + clearance of its crossings."""
        crossing = intersection.serves_pedestrians(phase)
        if crossing <= 0:
            return self.min_green_s
        return max(self.min_green_s, self.ped_walk_s + self.ped_clearance_s(crossing))


def _loses_green(a: str, b: str) -> bool:
    """A link loses its green when it stops being G/g (going to "s" means: stop first), and
    loses its protection going from G to g: traffic that had right of way must clear before
    conflicting traffic starts, as with a yellow arrow before a permitted left turn."""
    return (a in "Gg" and b not in "Gg") or (a == "G" and b == "g")


def yellow_state(from_state: str, to_state: str) -> str:
    """``from_state`` with every link that loses its green turned yellow."""
    return "".join(
        "y" if _loses_green(a, b) else a for a, b in zip(from_state, to_state, strict=True)
    )


def all_red_state(from_state: str, to_state: str) -> str:
    """Links green in both states stay green; every other link is red."""
    return "".join(
        a if a in GREEN and b in GREEN and not _loses_green(a, b) else "r"
        for a, b in zip(from_state, to_state, strict=True)
    )


def transition(from_state: str, to_state: str, rules: SafetyRules) -> list[tuple[str, float]]:
    """The intermediate states (with durations) between two green phases."""
    if from_state == to_state:
        return []
    steps = []
    yellow = yellow_state(from_state, to_state)
    if "y" in yellow:
        steps.append((yellow, rules.yellow_s))
        if rules.all_red_s > 0:
            steps.append((all_red_state(from_state, to_state), rules.all_red_s))
    return steps


@dataclass
class _Run:
    char: str
    start: float
    end: float


def _link_runs(states: Sequence[tuple[str, float]], index: int) -> list[_Run]:
    runs: list[_Run] = []
    t = 0.0
    for state, duration in states:
        c = state[index]
        # "s" (go after a full stop) needs no yellow to end: nobody enters it at speed.
        kind = "G" if c in "Gg" else c
        if runs and runs[-1].char == kind:
            runs[-1].end = t + duration
        else:
            runs.append(_Run(kind, t, t + duration))
        t += duration
    return runs


def check_schedule(
    intersection: SignalIntersection,
    rules: SafetyRules,
    states: Iterable[tuple],
) -> None:
    """Raise ``SafetyViolation`` unless the sequence of states obeys every rule.

    Entries are ``(state, seconds)`` or ``(state, seconds, phase)``, where ``phase`` is the
    green phase the state shows (None during a change); with phases given, each phase's
    own min green (pedestrian clearance included) is checked too.  A state string alone
    cannot say it: an all-red state may look exactly like some other phase.  The first and
    last run of each link are cut by the window, so their length is not checked.
    """
    entries = [tuple(e) for e in states if e[1] > 0]
    seq = [(e[0], float(e[1])) for e in entries]
    labelled = [(e[0], float(e[1]), e[2]) for e in entries if len(e) > 2]
    for k, (state, _) in enumerate(seq):
        try:
            check_state(intersection, state, f"state {k}")
        except ValueError as exc:
            raise SafetyViolation(str(exc)) from None
    where = f"intersection {intersection.id}"
    runs = {lk.index: _link_runs(seq, lk.index) for lk in intersection.links}
    for lk in intersection.links:
        lruns = runs[lk.index]
        min_green = rules.min_green_s
        if lk.pedestrian:
            min_green = max(
                min_green, rules.ped_walk_s + rules.ped_clearance_s(lk.crossing_length_m)
            )
        for n, run in enumerate(lruns):
            inner = 0 < n < len(lruns) - 1
            if run.char == "G":
                if inner and run.end - run.start < min_green - EPS:
                    raise SafetyViolation(
                        f"{where}: link {lk.index} green for {run.end - run.start:g} s at "
                        f"t={run.start:g} s, min green is {min_green:g} s"
                    )
                if n + 1 < len(lruns) and lruns[n + 1].char != "y":
                    raise SafetyViolation(
                        f"{where}: link {lk.index} goes from green to {lruns[n + 1].char!r} at "
                        f"t={run.end:g} s without yellow"
                    )
            elif run.char == "y" and inner and run.end - run.start < rules.yellow_s - EPS:
                raise SafetyViolation(
                    f"{where}: link {lk.index} yellow for {run.end - run.start:g} s at "
                    f"t={run.start:g} s, yellow is {rules.yellow_s:g} s"
                )
    # All-red: a link may turn green only when no conflicting link is still yellow, and
    # all_red_s after the last one cleared.  Conflicting links green on both sides of the
    # change are simultaneous greens, which check_state already judged.
    for i, j in intersection.conflicts:
        for a, b in ((i, j), (j, i)):
            for run in runs[a]:
                if run.char != "G" or run.start <= 0:
                    continue
                s = run.start
                for other in runs[b]:
                    if other.start >= s - EPS or other.end <= s - rules.all_red_s + EPS:
                        continue
                    if other.char == "G" and other.end > s + EPS:
                        continue
                    if other.char in ("G", "y"):
                        raise SafetyViolation(
                            f"{where}: link {a} turns green at t={s:g} s while conflicting "
                            f"link {b} clears until t={other.end:g} s (all-red "
                            f"{rules.all_red_s:g} s)"
                        )
    # Protection dropped (G -> g) at the instant a conflicting link turns green.
    for (before, _), (after, _) in itertools.pairwise(seq):
        for i, j in intersection.conflicts:
            for a, b in ((i, j), (j, i)):
                if (
                    before[a] == "G"
                    and after[a] == "g"
                    and after[b] in "Gg"
                    and (before[b] not in "Gg")
                ):
                    raise SafetyViolation(
                        f"{where}: link {a} drops from protected to permitted green just as "
                        f"conflicting link {b} turns green, without a yellow"
                    )
    if labelled and len(labelled) == len(entries):
        _check_phase_min_green(intersection, rules, labelled)


def _check_phase_min_green(
    intersection: SignalIntersection, rules: SafetyRules, seq: list[tuple[str, float, object]]
) -> None:
    merged: list[list] = []
    for _, duration, phase in seq:
        if merged and merged[-1][0] == phase and phase is not None:
            merged[-1][1] += duration
        else:
            merged.append([phase, duration])
    t = 0.0
    for n, (phase, duration) in enumerate(merged):
        if 0 < n < len(merged) - 1 and phase is not None:
            need = rules.phase_min_green_s(intersection, int(phase))
            if duration < need - EPS:
                raise SafetyViolation(
                    f"intersection {intersection.id}: phase {phase} green for "
                    f"{duration:g} s at t={t:g} s, its min green is {need:g} s"
                )
        t += duration
