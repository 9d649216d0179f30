"""The signal-controlled intersection: links, conflicts and green phases.

A *link* is one signal index of the controller: traffic from one incoming lane to one
outgoing lane (or a pedestrian crossing).  A *phase* is a signal state string with one
character per link, in SUMO's alphabet: ``G`` protected green, ``g`` permitted green (must
yield), ``s`` green arrow after a stop, ``y`` yellow, ``r`` red.  Two links *conflict* when
their paths cross; they may never both be protected green.  Permitted greens (``g``, ``s``)
yield to conflicting traffic, which is what makes e.g. a permitted left turn legal.
"""

from __future__ import annotations

from dataclasses import dataclass

GREEN = frozenset("Ggs")
PROTECTED = "G"
VALID_STATE_CHARS = frozenset("GgsyrOou")


class IntersectionError(ValueError):
    """The intersection model is inconsistent (bad phase strings, conflicting greens)."""


@dataclass(frozen=True)
class Link:
    """One signal index: a movement from an incoming lane to an outgoing lane."""

    index: int
    from_lane: str
    to_lane: str
    direction: str = "s"  # SUMO direction: s, l, r, t (turn-around), L, R
    pedestrian: bool = False
    crossing_length_m: float = 0.0


@dataclass(frozen=True)
class SignalIntersection:
    """Everything a planner and the safety checks know about one intersection."""

    id: str
    links: tuple[Link, ...]
    conflicts: frozenset[tuple[int, int]]  # (i, j) with i < j
    green_phases: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.links)
        if n == 0:
            raise IntersectionError(f"intersection {self.id}: no signal links")
        if sorted(link.index for link in self.links) != list(range(n)):
            raise IntersectionError(f"intersection {self.id}: link indices must be 0..{n - 1}")
        if not self.green_phases:
            raise IntersectionError(f"intersection {self.id}: no green phases")
        for i, j in self.conflicts:
            if not 0 <= i < j < n:
                raise IntersectionError(f"intersection {self.id}: bad conflict pair {(i, j)}")
        for k, state in enumerate(self.green_phases):
            check_state(self, state, f"green phase {k}")
            if not any(c in "Gg" for c in state):
                raise IntersectionError(f"intersection {self.id}: green phase {k} has no green")
            if "y" in state:
                raise IntersectionError(
                    f"intersection {self.id}: green phase {k} {state!r} contains yellow"
                )
        if len(set(self.green_phases)) != len(self.green_phases):
            raise IntersectionError(f"intersection {self.id}: duplicate green phases")

    @property
    def n_links(self) -> int:
        return len(self.links)

    @property
    def incoming_lanes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lk.from_lane for lk in self.links
                                   if lk.from_lane and not lk.pedestrian))  # fmt: skip

    @property
    def outgoing_lanes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lk.to_lane for lk in self.links
                                   if lk.to_lane and not lk.pedestrian))  # fmt: skip

    def phase_links(self, phase: int) -> tuple[Link, ...]:
        """Links the phase serves: G or g.  An "s" (go after stopping, e.g. right turn on
        red) is open in most phases and is nobody's reason to choose or extend one."""
        state = self.green_phases[phase]
        return tuple(lk for lk in self.links if state[lk.index] in "Gg")

    def phase_lanes(self, phase: int) -> tuple[str, ...]:
        """Incoming lanes the phase serves."""
        return tuple(dict.fromkeys(lk.from_lane for lk in self.phase_links(phase)
                                   if lk.from_lane and not lk.pedestrian))  # fmt: skip

    def serves_pedestrians(self, phase: int) -> float:
        """The longest crossing (m) this phase gives a green to; 0 when none."""
        return max((lk.crossing_length_m for lk in self.phase_links(phase) if lk.pedestrian),
                   default=0.0)  # fmt: skip


def check_state(intersection: SignalIntersection, state: str, what: str = "state") -> None:
    """Raise unless ``state`` is a well-formed signal state with no conflicting greens."""
    if len(state) != intersection.n_links:
        raise IntersectionError(
            f"intersection {intersection.id}: {what} {state!r} has {len(state)} signals, "
            f"the intersection has {intersection.n_links} links"
        )
    bad = set(state) - VALID_STATE_CHARS
    if bad:
        raise IntersectionError(
            f"intersection {intersection.id}: {what} {state!r} has unknown signal(s) {sorted(bad)}"
        )
    for i, j in intersection.conflicts:
        if state[i] == PROTECTED and state[j] == PROTECTED:
            raise IntersectionError(
                f"intersection {intersection.id}: {what} {state!r} gives protected green to "
                f"links {i} and {j}, whose paths cross"
            )
