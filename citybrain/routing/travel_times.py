"""Edge travel times per time bin: what the router costs a route with.

Each edge gets one travel time per bin, from the best knowledge there is:

- a measured speed (RSU lanes the edge maps to): length / speed;
- else a flow (forecast or measured) through the BPR volume-delay function,
  ``t = t_free * (1 + 0.15 * (v / c) ** 4)``, capacity ``c`` = lanes x saturation flow x
  the green share the signal gives it;
- else free flow at the speed limit;

plus, where the edge ends at a signal, Webster's uniform delay for its green share:
``C (1 - g/C)^2 / (2 (1 - min(1, x) g/C))``.  Times after the last bin repeat the last bin.

Crossing a junction takes the graph's free-flow turn time (``RoadGraph.turn_s``) and,
optionally, a *turn delay*: seconds spent at the junction at an edge's end for one movement
(edge -> next edge), e.g. the queue a camera sees on the lanes of a left turn
(``citybrain.routing.signal_delay``).  They describe the present and hold at every
departure time: there is no forecast of them, and dropping them for later bins would make
far junctions look free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from citybrain.routing.graph import RoadGraph

BPR_ALPHA = 0.15
BPR_BETA = 4.0
SATURATION_VPHPL = 1800.0


@dataclass(frozen=True)
class SignalShare:
    """The share of a cycle an edge's movement gets green, at the junction it enters."""

    cycle_s: float
    green_s: float


def uniform_delay_s(share: SignalShare, degree: float) -> float:
    """Webster's uniform delay (s) for a movement with this green share and v/c ``degree``."""
    c, g = share.cycle_s, min(share.green_s, share.cycle_s)
    if c <= 0:
        return 0.0
    lam = g / c
    return c * (1 - lam) ** 2 / (2 * (1 - min(1.0, degree) * lam))


class TravelTimes:
    def __init__(
        self,
        graph: RoadGraph,
        table: np.ndarray,
        start_s: float,
        bin_s: float,
        turn_delay_s: Mapping[tuple[str, str], float] | None = None,
    ):
        if table.shape[0] != graph.n_edges or table.ndim != 2 or table.shape[1] < 1:
            raise ValueError(f"travel-time table must be (n_edges={graph.n_edges}, n_bins)")
        if not np.all(np.isfinite(table)) or np.any(table <= 0):
            raise ValueError("travel times must be finite and positive")
        self.graph = graph
        self.table = table
        self.start_s = float(start_s)
        self.bin_s = float(bin_s)
        self.n_bins = table.shape[1]
        self._rows = table.tolist()  # plain floats: the router reads one per relaxation
        # turns[e][f]: seconds at the junction for the movement e -> f (edge indices): the
        # graph's crossing time plus the given delay
        self.turns: dict[int, dict[int, float]] = {}
        for (e, f), d in graph.turn_s.items():
            self.turns.setdefault(e, {})[f] = d
        for (a, b), d in (turn_delay_s or {}).items():
            if not math.isfinite(d) or d < 0:
                raise ValueError(f"turn delay {a} -> {b} must be finite and >= 0, got {d}")
            e, f = graph.edge(a), graph.edge(b)
            if f not in graph.successors[e]:
                raise ValueError(f"no turn from edge {a!r} to edge {b!r}")
            if d > 0:
                row = self.turns.setdefault(e, {})
                row[f] = row.get(f, 0.0) + float(d)

    def with_turn_delays(self, turn_delay_s: Mapping[tuple[str, str], float]) -> TravelTimes:
        """The same edge times with these turn delays (instead of any before)."""
        return TravelTimes(self.graph, self.table, self.start_s, self.bin_s, turn_delay_s)

    @classmethod
    def free_flow(cls, graph: RoadGraph, start_s: float = 0.0, bin_s: float = 300.0):
        return cls(graph, graph.free_flow_s()[:, None].copy(), start_s, bin_s)

    @classmethod
    def estimate(
        cls,
        graph: RoadGraph,
        start_s: float,
        bin_s: float,
        n_bins: int,
        *,
        speeds_mps: Mapping[str, Sequence[float]] | None = None,
        flows_vph: Mapping[str, Sequence[float]] | None = None,
        signals: Mapping[str, SignalShare] | None = None,
    ) -> TravelTimes:
        """Per edge and bin: speed if measured, else BPR on flow, else free flow; plus the
        signal's uniform delay where the edge ends at one."""
        free = graph.free_flow_s()
        table = np.repeat(free[:, None], n_bins, axis=1)
        degree = np.zeros((graph.n_edges, n_bins))
        green_share = np.ones(graph.n_edges)
        for edge_id, share in (signals or {}).items():
            green_share[graph.edge(edge_id)] = max(0.05, share.green_s / max(share.cycle_s, 1e-9))
        for edge_id, flows in (flows_vph or {}).items():
            e = graph.edge(edge_id)
            cap = graph.lanes[e] * SATURATION_VPHPL * green_share[e]
            for b in range(n_bins):
                v = flows[min(b, len(flows) - 1)] if len(flows) else 0.0
                if math.isfinite(v) and v >= 0:
                    degree[e, b] = v / cap
                    table[e, b] = free[e] * (1 + BPR_ALPHA * (v / cap) ** BPR_BETA)
        for edge_id, speeds in (speeds_mps or {}).items():
            e = graph.edge(edge_id)
            for b in range(n_bins):
                s = speeds[min(b, len(speeds) - 1)] if len(speeds) else float("nan")
                if math.isfinite(s) and s > 0.5:
                    table[e, b] = graph.length_m[e] / s
        for edge_id, share in (signals or {}).items():
            e = graph.edge(edge_id)
            for b in range(n_bins):
                table[e, b] += uniform_delay_s(share, degree[e, b])
        return cls(graph, table, start_s, bin_s)

    def at(self, edge: int, t: float) -> float:
        b = int((t - self.start_s) // self.bin_s)
        row = self._rows[edge]
        return row[0 if b < 0 else (b if b < self.n_bins else self.n_bins - 1)]

    def turn_at(self, edge: int, nxt: int) -> float:
        """Delay at the end of ``edge`` for turning into ``nxt``."""
        turns = self.turns.get(edge)
        return turns.get(nxt, 0.0) if turns else 0.0

    def lower_bound(self) -> np.ndarray:
        """No edge is ever faster than this (the router's landmarks rest on it)."""
        return self.table.min(axis=1)
