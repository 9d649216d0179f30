"""Fastest routes on time-dependent travel times: A* with landmarks (ALT).

Landmark distances are computed on each edge's lowest travel time over all bins, so they
are a lower bound whatever the departure time; when travel times change (every bin), only
those distances are recomputed (scipy's C Dijkstra, a few milliseconds per landmark on a
city graph), which is what makes ALT suit weights that change all day.  The search runs on
edges, not junctions, so turn restrictions hold exactly; a departure time picks each
edge's bin as the route reaches it (time-dependent, FIFO).

Alternatives come from the penalty method: each route found makes its edges 40% dearer
for the next search, and a new route is kept only if it differs enough from the others
and is not much slower than the best.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from citybrain.routing.graph import RoadGraph
from citybrain.routing.travel_times import TravelTimes

PENALTY = 1.4
ACTIVE = 4  # landmarks used per query
UNREACHABLE = 1e9
MAX_OVERLAP = 0.8  # share of a new alternative's travel time on an earlier route
MAX_STRETCH = 1.5  # an alternative is at most this much slower than the best


class NoRouteError(LookupError):
    """No path connects the two places (or every path is closed)."""


@dataclass(frozen=True)
class Route:
    edges: tuple[str, ...]
    nodes: tuple[str, ...]
    depart_s: float
    arrive_s: float
    length_m: float

    @property
    def travel_time_s(self) -> float:
        return self.arrive_s - self.depart_s


class Router:
    def __init__(self, graph: RoadGraph, times: TravelTimes, landmarks: int = 16, seed: int = 0):
        self.graph = graph
        self.n_landmarks = max(1, min(landmarks, graph.n_nodes))
        self.seed = seed
        self._lb: np.ndarray | None = None
        self.update(times)

    def update(self, times: TravelTimes) -> None:
        """New travel times: recompute the landmark lower bounds."""
        if times.graph is not self.graph:
            raise ValueError("travel times are for another graph")
        self.times = times
        g = self.graph
        self._head = g.head.tolist()
        self._flat = [row[0] for row in times._rows] if times.n_bins == 1 else None
        lb = times.lower_bound()
        if self._lb is not None and np.array_equal(lb, self._lb):
            return  # e.g. only turn delays changed: the landmark bounds still hold
        self._lb = lb
        # Parallel edges: the cheapest one bounds the node pair.
        pair_min: dict[tuple[int, int], float] = {}
        for t, h, w in zip(g.tail.tolist(), g.head.tolist(), lb.tolist(), strict=True):
            if w < pair_min.get((t, h), math.inf):
                pair_min[(t, h)] = w
        rows = np.fromiter((k[0] for k in pair_min), dtype=np.int64, count=len(pair_min))
        cols = np.fromiter((k[1] for k in pair_min), dtype=np.int64, count=len(pair_min))
        data = np.fromiter(pair_min.values(), dtype=float, count=len(pair_min))
        matrix = csr_matrix((data, (rows, cols)), shape=(g.n_nodes, g.n_nodes))
        self.landmarks = self._pick_landmarks(matrix)
        # d(L, v) and d(v, L); "unreachable" as a large finite number keeps the bounds
        # free of inf - inf.
        self._from = np.minimum(dijkstra(matrix, directed=True, indices=self.landmarks),
                                UNREACHABLE)  # fmt: skip
        self._to = np.minimum(dijkstra(matrix.T.tocsr(), directed=True, indices=self.landmarks),
                              UNREACHABLE)  # fmt: skip

    def _pick_landmarks(self, matrix) -> list[int]:
        """Farthest-point selection: each new landmark is far from those already picked."""
        rng = np.random.default_rng(self.seed)
        chosen = [int(rng.integers(self.graph.n_nodes))]
        best = np.full(self.graph.n_nodes, np.inf)
        for _ in range(self.n_landmarks):
            d = dijkstra(matrix, directed=False, indices=chosen[-1])
            best = np.minimum(best, np.where(np.isfinite(d), d, -1.0))
            nxt = int(np.argmax(best))
            if nxt in chosen:
                break
            chosen.append(nxt)
        return chosen[1:] if len(chosen) > self.n_landmarks else chosen

    def _heuristic(self, source: int, target: int) -> list[float]:
        """A lower bound of the time from every node to ``target``.

        Only the ``ACTIVE`` landmarks that bound the source best are used: the bound is
        computed for every node at once, and fewer landmarks make that cheaper.
        """
        f_t, t_t = self._from[:, target], self._to[:, target]
        at_source = np.maximum(f_t - self._from[:, source], self._to[:, source] - t_t)
        active = np.argsort(at_source)[-ACTIVE:]
        a = f_t[active][:, None] - self._from[active]  # d(L,t) - d(L,v)
        b = self._to[active] - t_t[active][:, None]  # d(v,L) - d(t,L)
        h = np.maximum(a.max(axis=0), b.max(axis=0))
        return np.clip(h, 0.0, UNREACHABLE).tolist()

    def route(
        self,
        origin: str,
        destination: str,
        depart_s: float,
        alternatives: int = 1,
        closed: Iterable[str] = (),
    ) -> list[Route]:
        """The fastest route, then up to ``alternatives - 1`` distinct others."""
        g = self.graph
        src, dst = g.node(origin), g.node(destination)
        if src == dst:
            return [Route((), (origin,), depart_s, depart_s, 0.0)]
        closed_idx = {g.edge(e) for e in closed}
        starts = g.out_edges[g.out_offsets[src] : g.out_offsets[src + 1]].tolist()
        return self._routes(starts, None, dst, depart_s, alternatives, closed_idx,
                            f"from {origin!r} to {destination!r}")  # fmt: skip

    def route_between_edges(
        self,
        origin_edge: str,
        destination_edge: str,
        depart_s: float,
        alternatives: int = 1,
        closed: Iterable[str] = (),
    ) -> list[Route]:
        """Routes for a road user already on ``origin_edge`` (it starts at that edge's
        beginning) to the end of ``destination_edge``; both edges are part of the route.
        This is what a vehicle's navigation asks: it cannot leave its edge but by its end."""
        g = self.graph
        o, d = g.edge(origin_edge), g.edge(destination_edge)
        closed_idx = {g.edge(e) for e in closed}
        if d in closed_idx:
            raise NoRouteError(f"destination edge {destination_edge!r} is closed")
        if o == d:
            return [self._replay([o], depart_s)]
        return self._routes([o], d, int(g.head[d]), depart_s, alternatives, closed_idx,
                            f"from edge {origin_edge!r} to edge {destination_edge!r}")  # fmt: skip

    def evaluate(self, edges: Iterable[str], depart_s: float) -> Route:
        """A given route (edge ids) timed on the current travel times; raises
        ``NoRouteError`` if it takes a turn the graph does not allow."""
        g = self.graph
        idx = [g.edge(e) for e in edges]
        if not idx:
            raise NoRouteError("a route needs at least one edge")
        for a, b in pairwise(idx):
            if b not in g.successors[a]:
                raise NoRouteError(f"no turn from {g.edge_ids[a]!r} to {g.edge_ids[b]!r}")
        return self._replay(idx, depart_s)

    def _routes(self, starts, goal_edge, dst, depart_s, alternatives, closed_idx, what):
        h = self._heuristic(int(self.graph.tail[starts[0]]) if starts else dst, dst)
        penalty: dict[int, float] = {}
        routes: list[Route] = []
        tries = 0
        while len(routes) < alternatives and tries < 3 * alternatives:
            tries += 1
            edges = self._search(starts, goal_edge, dst, depart_s, h, closed_idx, penalty)
            if edges is None:
                break
            route = self._replay(edges, depart_s)
            if routes:
                best = routes[0].travel_time_s
                if route.travel_time_s > MAX_STRETCH * best:
                    break
                if any(self._overlap(route, r) > MAX_OVERLAP for r in routes):
                    for e in edges:
                        penalty[e] = penalty.get(e, 1.0) * PENALTY
                    continue
            routes.append(route)
            for e in edges:
                penalty[e] = penalty.get(e, 1.0) * PENALTY
        if not routes:
            raise NoRouteError(f"no open route {what}")
        return routes

    def _search(self, starts, goal_edge, dst, depart_s, h, closed, penalty) -> list[int] | None:
        """Edge-based A*: from the ``starts`` edges (entered at ``depart_s``) to the end of
        ``goal_edge``, or of any edge into node ``dst`` when ``goal_edge`` is None."""
        times = self.times
        head = self._head
        succ = self.graph.successors
        flat = self._flat  # one bin: plain list lookups, no time arithmetic
        turns = times.turns

        def cost(e: int, t: float) -> float:
            c = flat[e] if flat is not None else times.at(e, t)
            return c * penalty[e] if e in penalty else c

        arrive: dict[int, float] = {}
        parent: dict[int, int] = {}
        heap: list[tuple[float, float, int]] = []
        for e in starts:
            if e in closed:
                continue
            t = depart_s + cost(e, depart_s)
            if t < arrive.get(e, math.inf):
                arrive[e] = t
                heapq.heappush(heap, (t + h[head[e]], t, e))
        done: set[int] = set()
        push, pop = heapq.heappush, heapq.heappop
        while heap:
            _, t, e = pop(heap)
            if e in done:
                continue
            done.add(e)
            if e == goal_edge or (goal_edge is None and head[e] == dst):
                path = [e]
                while path[-1] in parent:
                    path.append(parent[path[-1]])
                return path[::-1]
            wait = turns.get(e) if turns else None
            if wait is None:  # the hot path on graphs without turn times: kept lean
                for f in succ[e]:
                    if f in done or f in closed:
                        continue
                    tf = t + (flat[f] if flat is not None and f not in penalty else cost(f, t))
                    if tf < arrive.get(f, math.inf):
                        arrive[f] = tf
                        parent[f] = e
                        push(heap, (tf + h[head[f]], tf, f))
                continue
            for f in succ[e]:
                if f in done or f in closed:
                    continue
                tj = t + wait.get(f, 0.0)
                tf = tj + (flat[f] if flat is not None and f not in penalty else cost(f, tj))
                if tf < arrive.get(f, math.inf):
                    arrive[f] = tf
                    parent[f] = e
                    push(heap, (tf + h[head[f]], tf, f))
        return None

    def _replay(self, edges: list[int], depart_s: float) -> Route:
        """The route's true times (without the alternatives' penalties)."""
        g = self.graph
        t = depart_s
        for k, e in enumerate(edges):
            if k:
                t += self.times.turn_at(edges[k - 1], e)
            t += self.times.at(e, t)
        nodes = [g.node_ids[g.tail[edges[0]]]] + [g.node_ids[g.head[e]] for e in edges]
        return Route(
            edges=tuple(g.edge_ids[e] for e in edges),
            nodes=tuple(nodes),
            depart_s=depart_s,
            arrive_s=t,
            length_m=float(sum(g.length_m[e] for e in edges)),
        )

    def _overlap(self, a: Route, b: Route) -> float:
        shared = set(a.edges) & set(b.edges)
        g = self.graph
        total = sum(g.length_m[g.edge(e)] for e in a.edges) or 1.0
        return sum(g.length_m[g.edge(e)] for e in shared) / total
