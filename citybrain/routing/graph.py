"""The road graph: directed edges between junctions, with lengths, speed limits, lanes and
the turns allowed from each edge.

Built from a SUMO network (``from_sumo``: edges, junctions, and the connections that say
which turns exist), from GeoJSON road segments (``from_geojson``: LineStrings with
``from``/``to`` node ids, every turn allowed but U-turns), or generated (``grid``).
Arrays are numpy, so the graph of a whole city stays compact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class GraphError(ValueError):
    """The road data cannot make a graph; the message names the edge or node."""


@dataclass
class RoadGraph:
    node_ids: list[str]
    xy: np.ndarray  # (n_nodes, 2) metres (or lon/lat scaled), for display and sanity only
    edge_ids: list[str]
    tail: np.ndarray  # (n_edges,) node index the edge leaves
    head: np.ndarray  # (n_edges,) node index the edge enters
    length_m: np.ndarray
    speed_mps: np.ndarray  # speed limit
    lanes: np.ndarray
    # successors[e]: edges one may take after e (turn restrictions); None: every out-edge
    # of head[e] except the U-turn back.
    successors: list[tuple[int, ...]] | None = None
    # (e, f) -> free-flow seconds to cross the junction from e into f, where known (SUMO
    # nets: the turn's path through the junction, at its speed, with the braking for it)
    turn_s: dict[tuple[int, int], float] = field(default_factory=dict)
    # (e, f) turns that must give way at a junction without signals (minor road, right
    # before left, stop, all-way stop): their wait depends on traffic no camera watches
    yield_turns: frozenset[tuple[int, int]] = frozenset()
    _edge_index: dict[str, int] = field(default_factory=dict, repr=False)
    _node_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n, m = len(self.node_ids), len(self.edge_ids)
        for name in ("tail", "head", "length_m", "speed_mps", "lanes"):
            if len(getattr(self, name)) != m:
                raise GraphError(f"{name} has {len(getattr(self, name))} entries for {m} edges")
        if m and (self.tail.max() >= n or self.head.max() >= n):
            raise GraphError("an edge refers to a node that does not exist")
        bad = np.flatnonzero(~(self.length_m > 0) | ~(self.speed_mps > 0))
        if len(bad):
            raise GraphError(
                f"edge {self.edge_ids[bad[0]]!r}: length and speed must be positive "
                f"(got {self.length_m[bad[0]]} m, {self.speed_mps[bad[0]]} m/s)"
            )
        self._edge_index = {e: i for i, e in enumerate(self.edge_ids)}
        if len(self._edge_index) != m:
            raise GraphError("duplicate edge ids")
        self._node_index = {v: i for i, v in enumerate(self.node_ids)}
        order = np.argsort(self.tail, kind="stable")
        self.out_offsets = np.searchsorted(self.tail[order], np.arange(n + 1)).astype(np.int64)
        self.out_edges = order.astype(np.int64)
        if self.successors is None:
            out = [self.out_edges[self.out_offsets[v] : self.out_offsets[v + 1]] for v in range(n)]
            self.successors = [
                tuple(int(f) for f in out[self.head[e]] if self.head[f] != self.tail[e])
                or tuple(int(f) for f in out[self.head[e]])  # a dead end may turn back
                for e in range(m)
            ]

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_edges(self) -> int:
        return len(self.edge_ids)

    def edge(self, edge_id: str) -> int:
        try:
            return self._edge_index[edge_id]
        except KeyError:
            raise GraphError(f"no edge {edge_id!r}") from None

    def node(self, node_id: str) -> int:
        try:
            return self._node_index[node_id]
        except KeyError:
            raise GraphError(f"no node {node_id!r}") from None

    def free_flow_s(self) -> np.ndarray:
        return self.length_m / self.speed_mps


def grid(rows: int, cols: int, spacing_m: float = 200.0, seed: int = 0) -> RoadGraph:
    """A rows x cols street grid, two-way, with speed limits of 30-60 km/h drawn at random."""
    rng = np.random.default_rng(seed)
    node_ids = [f"n{r}_{c}" for r in range(rows) for c in range(cols)]
    xy = np.array([(c * spacing_m, r * spacing_m) for r in range(rows) for c in range(cols)])
    tails, heads = [], []
    for r in range(rows):
        for c in range(cols):
            v = r * cols + c
            for dr, dc in ((0, 1), (1, 0)):
                rr, cc = r + dr, c + dc
                if rr < rows and cc < cols:
                    w = rr * cols + cc
                    tails += [v, w]
                    heads += [w, v]
    m = len(tails)
    speeds = rng.choice([30, 40, 50, 60], size=m) / 3.6
    length = spacing_m * rng.uniform(0.9, 1.1, size=m)
    return RoadGraph(
        node_ids=node_ids,
        xy=xy,
        edge_ids=[f"e{k}" for k in range(m)],
        tail=np.array(tails),
        head=np.array(heads),
        length_m=length,
        speed_mps=speeds,
        lanes=np.ones(m, dtype=np.int64),
    )


def from_sumo(net_file) -> RoadGraph:
    """Normal edges of a SUMO net (a file, or a net sumolib has read), with turns from its
    connections."""
    from citybrain.sim.sumo_net import read_net

    net = net_file if hasattr(net_file, "getEdges") else read_net(net_file)
    edges = [e for e in net.getEdges(withInternal=False) if e.getFunction() == ""]
    if not edges:
        raise GraphError(f"{net_file}: no road edges")
    nodes = sorted(
        {e.getFromNode().getID() for e in edges} | {e.getToNode().getID() for e in edges}
    )
    index = {v: i for i, v in enumerate(nodes)}
    eindex = {e.getID(): k for k, e in enumerate(edges)}
    coords = {n.getID(): n.getCoord() for n in net.getNodes()}
    successors = []
    turn_s: dict[tuple[int, int], float] = {}
    priority: dict[tuple[int, int], bool] = {}  # some connection of the turn need not yield
    for k, e in enumerate(edges):
        succ = sorted({eindex[t.getID()] for t in e.getOutgoing() if t.getID() in eindex})
        successors.append(tuple(succ))
        for lane in e.getLanes():
            for conn in lane.getOutgoing():
                f = eindex.get(conn.getTo().getID())
                if f is not None:
                    t = _crossing_s(net, conn.getViaLaneID(), e.getSpeed())
                    turn_s[(k, f)] = min(t, turn_s.get((k, f), math.inf))
                    free = bool(conn.getTLSID()) or conn.getState() not in YIELD_STATES
                    priority[(k, f)] = priority.get((k, f), False) or free
    return RoadGraph(
        node_ids=nodes,
        xy=np.array([coords[v][:2] for v in nodes], dtype=float),
        edge_ids=[e.getID() for e in edges],
        tail=np.array([index[e.getFromNode().getID()] for e in edges]),
        head=np.array([index[e.getToNode().getID()] for e in edges]),
        length_m=np.array([max(e.getLength(), 0.1) for e in edges]),
        speed_mps=np.array([max(e.getSpeed(), 0.5) for e in edges]),
        lanes=np.array([e.getLaneNumber() for e in edges]),
        successors=successors,
        turn_s=turn_s,
        yield_turns=frozenset(t for t, free in priority.items() if not free),
    )


YIELD_STATES = frozenset("m=sw")  # SUMO link states that give way: minor, equal, stop, all-way
# A passenger car's acceleration and braking (SUMO's defaults), m/s²
ACCEL_MPS2 = 2.6
DECEL_MPS2 = 4.5


def _crossing_s(net, via_lane: str, approach_mps: float) -> float:
    """Seconds to cross a junction along ``via_lane`` (and the internal lanes it leads
    to), plus the time lost braking from the approach speed to the turn's speed and
    speeding up again: ``(v - u)^2 / 2v * (1/a + 1/b)``."""
    seconds, slowest, hops = 0.0, approach_mps, 0
    while via_lane and hops < 4:
        lane = net.getLane(via_lane)
        speed = max(lane.getSpeed(), 0.5)
        seconds += lane.getLength() / speed
        slowest = min(slowest, speed)
        nxt = [c.getViaLaneID() for c in lane.getOutgoing()]
        via_lane = next((v for v in nxt if v), "")
        hops += 1
    v = max(approach_mps, 0.5)
    return seconds + (v - slowest) ** 2 / (2 * v) * (1 / ACCEL_MPS2 + 1 / DECEL_MPS2)


def from_geojson(features: list[dict]) -> RoadGraph:
    """LineString features with properties ``id``, ``from``, ``to``, ``speed_kmh``,
    ``lanes`` and optionally ``oneway`` (default false: both directions)."""
    from shapely.geometry import shape

    node_xy: dict[str, tuple[float, float]] = {}
    rows = []
    for k, f in enumerate(features):
        props = f.get("properties") or {}
        where = f"feature {k} ({props.get('id', '?')})"
        try:
            geom = shape(f["geometry"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise GraphError(f"{where}: bad geometry: {exc}") from None
        if geom.geom_type != "LineString" or geom.length <= 0:
            raise GraphError(f"{where}: needs a non-empty LineString")
        for key in ("id", "from", "to"):
            if key not in props:
                raise GraphError(f"{where}: property {key!r} is missing")
        speed = float(props.get("speed_kmh", 50)) / 3.6
        if not math.isfinite(speed) or speed <= 0:
            raise GraphError(f"{where}: bad speed_kmh")
        coords = list(geom.coords)
        node_xy.setdefault(str(props["from"]), coords[0][:2])
        node_xy.setdefault(str(props["to"]), coords[-1][:2])
        length = float(props.get("length_m", _metres(geom)))
        lanes = int(props.get("lanes", 1))
        rows.append((str(props["id"]), str(props["from"]), str(props["to"]), length, speed, lanes))
        if not props.get("oneway", False):
            rows.append((str(props["id"]) + "-rev", str(props["to"]), str(props["from"]), length,
                         speed, lanes))  # fmt: skip
    nodes = sorted(node_xy)
    index = {v: i for i, v in enumerate(nodes)}
    return RoadGraph(
        node_ids=nodes,
        xy=np.array([node_xy[v] for v in nodes], dtype=float),
        edge_ids=[r[0] for r in rows],
        tail=np.array([index[r[1]] for r in rows]),
        head=np.array([index[r[2]] for r in rows]),
        length_m=np.array([r[3] for r in rows]),
        speed_mps=np.array([r[4] for r in rows]),
        lanes=np.array([r[5] for r in rows]),
    )


def _metres(geom) -> float:
    """Length in metres: lon/lat coordinates are measured on the sphere, others as given."""
    xs = [c[0] for c in geom.coords]
    ys = [c[1] for c in geom.coords]
    if all(-180 <= x <= 180 for x in xs) and all(-90 <= y <= 90 for y in ys):
        total = 0.0
        for (x1, y1), (x2, y2) in zip(geom.coords, list(geom.coords)[1:], strict=False):
            p1, p2 = math.radians(y1), math.radians(y2)
            dp, dl = p2 - p1, math.radians(x2 - x1)
            a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
            total += 2 * 6_371_000 * math.asin(math.sqrt(a))
        return total
    return float(geom.length)
