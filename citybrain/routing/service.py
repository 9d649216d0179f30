"""The router as citybrain runs it: the configured graph, travel times kept fresh.

Every ``refresh_s``, for the RSU lanes mapped to each edge (``routing.edge_lanes``):

- their lane forecasts give the edge's flow per bin for the next ``bins`` bins, and BPR
  turns flow into travel time; edges nobody watches keep free-flow times;
- their live state (the latest lane intervals) gives the wait at the edge's end by Little's
  law, the queue divided by the flow through it (``live_delay_s``), added to every turn
  out of the edge;
- where there is no live wait, the signal the edge ends at (a signal configuration whose
  links start on the edge's lanes) adds Webster's uniform delay for the green share its
  active plan gives those links (``plan_shares``).

The landmarks are re-bounded on the new times (``Router.update``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import redis

from citybrain.config import RoutingConfig
from citybrain.forecast.online import stored_forecasts
from citybrain.lane_state import LaneState, rsu_lane_states
from citybrain.routing.graph import GraphError, RoadGraph, from_geojson, from_sumo
from citybrain.routing.router import Router
from citybrain.routing.travel_times import SignalShare, TravelTimes
from citybrain.state import TrafficState

SATURATION_HEADWAY_S = 2.0  # a queue with no flow measured yet: one headway per road user
LIVE_WINDOW_S = 300
MAX_LIVE_DELAY_S = 600.0


def live_delay_s(lanes: list[LaneState]) -> float | None:
    """Seconds a road user joining these lanes waits now, the mean over the lanes that
    report a queue; None when none is fresh."""
    waits = []
    for lane in lanes:
        if lane.stale or lane.queue_vehicles is None:
            continue
        queue = lane.queue_vehicles
        if lane.flow_veh_h and lane.flow_veh_h > 0:
            waits.append(min(MAX_LIVE_DELAY_S, queue / (lane.flow_veh_h / 3600.0)))
        else:
            waits.append(min(MAX_LIVE_DELAY_S, queue * SATURATION_HEADWAY_S))
    return sum(waits) / len(waits) if waits else None


def load_graph(path: str) -> RoadGraph:
    p = Path(path).expanduser()
    if not p.exists():
        raise GraphError(f"road graph file not found: {p}")
    if p.name.endswith(".net.xml") or p.suffix == ".xml":
        return from_sumo(p)
    if p.suffix in (".geojson", ".json"):
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise GraphError(f"{p}: not JSON: {exc}") from None
        return from_geojson(data.get("features", []) if isinstance(data, dict) else data)
    raise GraphError(f"{p}: expected a SUMO .net.xml or a .geojson file")


def plan_shares(client: redis.Redis, lane_edge: dict[str, str]) -> dict[str, SignalShare]:
    """Edge -> the cycle and mean green of the signal links leaving its lanes, from each
    configured intersection's active plan."""
    from citybrain.intersections import IntersectionStore
    from citybrain.signal_plans import SignalPlanStore

    store = SignalPlanStore(client)
    greens: dict[str, list[SignalShare]] = {}
    for iid in IntersectionStore(client).ids():
        config, record = store.config(iid), store.record(iid)
        if config is None or record is None:
            continue
        inter, rules = config.intersection(iid), config.safety_rules()
        plan = record.active.to_plan(iid)
        cycle = plan.cycle_s(inter, rules)
        green = plan.green_s_by_link(inter, rules)
        for link in inter.links:
            edge = lane_edge.get(link.from_lane)
            if edge is not None and not link.pedestrian:
                greens.setdefault(edge, []).append(SignalShare(cycle, green[link.index]))
    return {
        edge: SignalShare(shares[0].cycle_s, sum(s.green_s for s in shares) / len(shares))
        for edge, shares in greens.items()
    }


class RoutingService:
    def __init__(
        self, cfg: RoutingConfig, client: redis.Redis | None, state: TrafficState | None = None
    ) -> None:
        if not cfg.graph:
            raise GraphError("routing is not configured: set routing.graph")
        self.cfg = cfg
        self.client = client
        self.state = state
        self.graph = load_graph(cfg.graph)
        unknown = [e for e in cfg.edge_lanes if e not in set(self.graph.edge_ids)]
        if unknown:
            raise GraphError(f"routing.edge_lanes names edges not in the graph: {unknown[:5]}")
        self.router = Router(self.graph, TravelTimes.free_flow(self.graph), cfg.landmarks)
        self.source = "free_flow"
        self.updated_s = 0.0
        self._lock = threading.Lock()

    def refresh(self, now_s: float | None = None) -> None:
        now = time.time() if now_s is None else now_s
        if now - self.updated_s < self.cfg.refresh_s or self.client is None:
            return
        with self._lock:
            if now - self.updated_s < self.cfg.refresh_s:
                return
            self.updated_s = now
            lanes = sorted({lane for ls in self.cfg.edge_lanes.values() for lane in ls})
            if not lanes:
                return
            by_lane = {f["detector"]: f for f in stored_forecasts(self.client, lanes)}
            flows: dict[str, list[float]] = {}
            bin_s = next(iter(by_lane.values()))["bin_s"] if by_lane else 300
            for edge, mapped in self.cfg.edge_lanes.items():
                series = [by_lane[lane]["flows_veh_h"] for lane in mapped if lane in by_lane]
                if series:
                    flows[edge] = [
                        sum(s[b] for s in series if b < len(s) and math.isfinite(s[b]))
                        for b in range(self.cfg.bins)
                    ]
            start = now // bin_s * bin_s
            live = self._live_delays()
            lane_edge = {lane: e for e, ls in self.cfg.edge_lanes.items() for lane in ls}
            signals = {
                e: share for e, share in plan_shares(self.client, lane_edge).items()
                if e not in live  # a measured wait already holds the signal's
            }  # fmt: skip
            times = TravelTimes.estimate(self.graph, start, bin_s, self.cfg.bins,
                                         flows_vph=flows, signals=signals)  # fmt: skip
            if live:
                g = self.graph
                times = times.with_turn_delays({
                    (edge, g.edge_ids[f]): wait for edge, wait in live.items()
                    for f in g.successors[g.edge(edge)]
                })  # fmt: skip
            self.router.update(times)
            parts = [f"forecasts ({len(flows)} of {self.graph.n_edges} edges)"] if flows else []
            if signals:
                parts.append(f"signal plans ({len(signals)} edges)")
            if live:
                parts.append(f"live queues ({len(live)} edges)")
            self.source = " + ".join(parts) or "free_flow"

    def _live_delays(self) -> dict[str, float]:
        """Edge -> the wait at its end, from the live state of the lanes mapped to it."""
        if self.state is None:
            return {}
        rsus = sorted({lane.split("/")[0] for ls in self.cfg.edge_lanes.values() for lane in ls})
        stale_after = self.state.config.state.stale_after_s
        by_key = {
            f"{ls.rsu_id}/{ls.camera_id}/{ls.lane_id}": ls
            for rsu in rsus
            for ls in rsu_lane_states(self.state, rsu, LIVE_WINDOW_S, stale_after)
        }
        out = {}
        for edge, mapped in self.cfg.edge_lanes.items():
            wait = live_delay_s([by_key[m] for m in mapped if m in by_key])
            if wait is not None and wait > 0:
                out[edge] = wait
        return out
