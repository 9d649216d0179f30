"""Read signal-controlled intersections out of a SUMO network (sumolib)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from citybrain.signals.intersection import GREEN, Link, SignalIntersection
from citybrain.sim import sumo_env  # noqa: F401  (environment before sumolib)


@dataclass(frozen=True)
class ShippedProgram:
    """The fixed-time program a SUMO net ships for one traffic light."""

    program_id: str
    offset_s: float
    phases: tuple[tuple[str, float], ...]  # (state, duration)


@dataclass(frozen=True)
class NetIntersection:
    intersection: SignalIntersection
    program: ShippedProgram | None
    # Lanes inside the junction box -> the signal link whose path they are part of.
    box_lanes: dict[str, int]


class NetError(ValueError):
    """The file is not a readable SUMO network; the message names it."""


def read_net(path: str | Path):
    import sumolib

    try:
        return sumolib.net.readNet(
            str(path), withPrograms=True, withPedestrianConnections=True, withInternal=True
        )
    except Exception as exc:  # sumolib raises whatever its SAX handler trips on
        raise NetError(
            f"{path}: not a readable SUMO network ({type(exc).__name__}: {exc})"
        ) from None


def _crossing_length(net, connection) -> float:
    edge = connection.getFrom()
    if edge.getFunction() == "crossing":
        return float(edge.getLength())
    return 0.0


def intersections_from_net(net) -> dict[str, NetIntersection]:
    """Every traffic light of ``net`` as a ``SignalIntersection`` with its shipped program.

    Conflicts come from the junction's foe matrix, leaving out merges (two links into the
    same lane): those zip, they do not cross.  Green phases are the shipped program's states
    without yellow, in program order.
    """
    by_tls: dict[str, list] = {}
    for edge in net.getEdges(withInternal=False):
        for conns in edge.getOutgoing().values():
            for conn in conns:
                if conn.getTLSID():
                    by_tls.setdefault(conn.getTLSID(), []).append(conn)
    out: dict[str, NetIntersection] = {}
    for tls in net.getTrafficLights():
        conns = by_tls.get(tls.getID(), [])
        by_index: dict[int, list] = {}
        for conn in conns:
            by_index.setdefault(conn.getTLLinkIndex(), []).append(conn)
        programs = tls.getPrograms()
        program = programs[sorted(programs)[0]] if programs else None
        n = max([*by_index, -1]) + 1
        if program is not None:
            n = max(n, len(program.getPhases()[0].state))
        links = []
        for i in range(n):
            group = by_index.get(i)
            if not group:
                links.append(Link(index=i, from_lane="", to_lane="", direction="s"))
                continue
            conn = group[0]
            crossing = _crossing_length(net, conn)
            links.append(
                Link(
                    index=i,
                    from_lane=conn.getFromLane().getID(),
                    to_lane=conn.getToLane().getID(),
                    direction=conn.getDirection(),
                    pedestrian=crossing > 0,
                    crossing_length_m=crossing,
                )
            )
        conflicts = set()
        for i, group_i in by_index.items():
            for j, group_j in by_index.items():
                if j <= i:
                    continue
                if any(_cross(a, b) for a in group_i for b in group_j):
                    conflicts.add((i, j))
        shipped = None
        greens: list[str] = []
        if program is not None:
            phases = tuple((p.state, float(p.duration)) for p in program.getPhases())
            shipped = ShippedProgram(str(program._id), float(program._offset or 0), phases)
            for state, _ in phases:
                if "y" not in state and any(c in GREEN for c in state) and state not in greens:
                    greens.append(state)
        intersection = SignalIntersection(
            id=tls.getID(),
            links=tuple(links),
            conflicts=frozenset(conflicts),
            green_phases=tuple(greens),
        )
        out[tls.getID()] = NetIntersection(intersection, shipped, _box_lanes(net, by_index))
    return out


def _cross(a, b) -> bool:
    """Do the paths of connections ``a`` and ``b`` cross inside their junction?"""
    ja, jb = a.getJunction(), b.getJunction()
    if ja is None or ja is not jb:
        return False
    if a.getToLane() is b.getToLane():
        return False  # a merge
    try:
        return bool(ja.areFoes(a.getJunctionIndex(), b.getJunctionIndex()))
    except (KeyError, IndexError):
        return False


def _box_lanes(net, by_index: dict[int, list]) -> dict[str, int]:
    """Internal (junction) lanes of each link, following chains through internal junctions."""
    out: dict[str, int] = {}
    for index, conns in by_index.items():
        for conn in conns:
            lane_id = conn.getViaLaneID()
            hops = 0
            while lane_id and lane_id.startswith(":") and hops < 8 and lane_id not in out:
                out[lane_id] = index
                hops += 1
                try:
                    lane = net.getLane(lane_id)
                except KeyError:
                    break
                nxt = lane.getOutgoing()
                if not nxt:
                    break
                lane_id = nxt[0].getViaLaneID() or nxt[0].getToLane().getID()
    return out
