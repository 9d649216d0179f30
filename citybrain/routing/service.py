"""The router as citybrain runs it: the configured graph, travel times kept fresh.

Every ``refresh_s`` the lane forecasts of the RSU lanes mapped to each edge
(``routing.edge_lanes``) give that edge's flow per bin for the next ``bins`` bins, and BPR
turns flow into travel time; edges nobody watches keep free-flow times.  The landmarks are
re-bounded on the new times (``Router.update``).
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
from citybrain.routing.graph import GraphError, RoadGraph, from_geojson, from_sumo
from citybrain.routing.router import Router
from citybrain.routing.travel_times import TravelTimes


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


class RoutingService:
    def __init__(self, cfg: RoutingConfig, client: redis.Redis | None) -> None:
        if not cfg.graph:
            raise GraphError("routing is not configured: set routing.graph")
        self.cfg = cfg
        self.client = client
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
            if not by_lane:
                return
            bin_s = next(iter(by_lane.values()))["bin_s"]
            flows: dict[str, list[float]] = {}
            for edge, mapped in self.cfg.edge_lanes.items():
                series = [by_lane[lane]["flows_veh_h"] for lane in mapped if lane in by_lane]
                if series:
                    flows[edge] = [
                        sum(s[b] for s in series if b < len(s) and math.isfinite(s[b]))
                        for b in range(self.cfg.bins)
                    ]
            start = now // bin_s * bin_s
            times = TravelTimes.estimate(self.graph, start, bin_s, self.cfg.bins, flows_vph=flows)
            self.router.update(times)
            self.source = f"forecasts ({len(flows)} of {self.graph.n_edges} edges)"
