"""Route query latency: citybrain's ALT router against networkx Dijkstra, same graph, same weights.

Graphs: a RESCO SUMO network (turns from its connections) and a generated street grid of
``--grid``² nodes (default 100 x 100 = 10,000 nodes).  Weights: free-flow travel times
(one bin, so networkx sees exactly the router's costs); every query's travel time is
checked against networkx's.  Queries are random origin/destination pairs (fixed seed),
timed one after the other in one process, side by side.

Then the digital twin on a multi-intersection RESCO scenario (``--twin-scenario``): the
citybrain controller fed through the bus (virtual RSUs -> Redis -> a real ingest worker)
against the same controller fed directly from the simulator, in the same run.  Virtual
RSUs publish once per simulated second (not yet 10 Hz); rerouting vehicles onto
citybrain's routes is not built yet, so the trip-time keys are null.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def measure(graph, queries: int, seed: int, landmarks: int, exact: bool) -> dict:
    """``exact``: the graph has no turn restrictions, so networkx's node-based cost must
    equal the router's; otherwise the router's (which obeys them) may only be longer."""
    import networkx as nx

    from citybrain.routing.router import NoRouteError, Router
    from citybrain.routing.travel_times import TravelTimes

    t0 = time.perf_counter()
    router = Router(graph, TravelTimes.free_flow(graph), landmarks=landmarks)
    prep_s = time.perf_counter() - t0
    weights = graph.free_flow_s()
    reference = nx.DiGraph()
    for e in range(graph.n_edges):
        u, v = int(graph.tail[e]), int(graph.head[e])
        if not reference.has_edge(u, v) or reference[u][v]["w"] > weights[e]:
            reference.add_edge(u, v, w=float(weights[e]))
    rng = random.Random(seed)
    ours, theirs = [], []
    mismatches = 0
    restricted = 0  # turn restrictions made the route slower than networkx's, or impossible
    while len(ours) < queries:
        s, t = rng.randrange(graph.n_nodes), rng.randrange(graph.n_nodes)
        if s == t:
            continue
        a = time.perf_counter()
        try:
            route = router.route(graph.node_ids[s], graph.node_ids[t], 0.0)[0]
        except NoRouteError:
            route = None
        b = time.perf_counter()
        try:
            length, _ = nx.single_source_dijkstra(reference, s, t, weight="w")
        except nx.NetworkXNoPath:
            length = None
        c = time.perf_counter()
        if route is None and length is not None:
            # Only a path through a banned turn exists: right for the router, an error
            # where there are no turn restrictions.
            mismatches += exact
            restricted += 1
        elif route is not None and (
            length is None
            or route.travel_time_s < length - 1e-6
            or (exact and route.travel_time_s > length + 1e-6)
        ):
            mismatches += 1
        elif route is not None and route.travel_time_s > length + 1e-6:
            restricted += 1
        ours.append(b - a)
        theirs.append(c - b)
    p = lambda xs, q: float(np.percentile(np.array(xs) * 1000, q))  # noqa: E731
    return {
        "nodes": graph.n_nodes, "edges": graph.n_edges, "queries": queries,
        "landmark_prep_s": round(prep_s, 3),
        "router_p50_ms": round(p(ours, 50), 3), "router_p99_ms": round(p(ours, 99), 3),
        "networkx_p50_ms": round(p(theirs, 50), 3), "networkx_p99_ms": round(p(theirs, 99), 3),
        "speedup_vs_networkx": round(p(theirs, 50) / p(ours, 50), 2),
        "cost_mismatches": mismatches,
        "longer_or_none_by_turn_restrictions": restricted,
    }  # fmt: skip


def run_twin(name: str) -> dict:
    from citybrain.sim.harness import HarnessOptions, load_scenario, run
    from common.datadir import resolve_asset
    from common.redis_server import LocalRedisServer

    scenario = load_scenario(resolve_asset(f"sumo/resco/{name}"))
    direct = run(scenario, "citybrain")
    server = LocalRedisServer().start()
    try:
        bus = run(scenario, "citybrain", options=HarnessOptions(bus_url=server.url))
    finally:
        server.stop()
    return {
        "scenario": name, "twin_rsus": bus.bus_rsus, "twin_msgs": bus.bus_messages,
        "twin_msgs_per_s": round(bus.bus_messages / bus.wall_s, 1),
        "simulated_s": scenario.end - scenario.begin, "wall_s": round(bus.wall_s, 1),
        "sync_waits": bus.bus_sync_waits, "fallback_steps": bus.fallback_steps,
        "delay_bus_s": round(bus.delay, 2), "delay_direct_s": round(direct.delay, 2),
        "trip_time_bus_s": round(bus.trip_time, 2),
        "trip_time_direct_s": round(direct.trip_time, 2),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=100, help="grid side (nodes = side²)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--landmarks", type=int, default=16)
    parser.add_argument("--scenario", default="ingolstadt7", help="RESCO net for the SUMO graph")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--twin-scenario", default="grid4x4", help="'' to skip the twin")
    args = parser.parse_args()

    from rsu_latency import machine_info

    from citybrain.routing.graph import from_sumo, grid
    from common.datadir import resolve_asset

    net = resolve_asset(f"sumo/resco/{args.scenario}/{args.scenario}.net.xml")
    sumo_graph = from_sumo(net)
    city = grid(args.grid, args.grid, seed=args.seed)
    results = {
        args.scenario: measure(sumo_graph, args.queries, args.seed, args.landmarks, exact=False),
        f"grid{args.grid}x{args.grid}": measure(city, args.queries, args.seed, args.landmarks,
                                                exact=True),
    }  # fmt: skip
    for name, r in results.items():
        print(f"{name}: {r['nodes']} nodes, {r['edges']} edges: router p50 {r['router_p50_ms']} ms"
              f" p99 {r['router_p99_ms']} ms; networkx p50 {r['networkx_p50_ms']} ms; "
              f"speedup {r['speedup_vs_networkx']}x; mismatches {r['cost_mismatches']}; "
              f"changed by turn restrictions {r['longer_or_none_by_turn_restrictions']}",
              file=sys.stderr)  # fmt: skip
    big = results[f"grid{args.grid}x{args.grid}"]
    twin = run_twin(args.twin_scenario) if args.twin_scenario else None
    if twin:
        print(f"twin {args.twin_scenario}: {twin['twin_rsus']} virtual RSUs, "
              f"{twin['twin_msgs_per_s']} msg/s, delay through the bus {twin['delay_bus_s']} s "
              f"against {twin['delay_direct_s']} s direct", file=sys.stderr)  # fmt: skip
    out = {
        "benchmark": "routing",
        "router_p50_ms": big["router_p50_ms"],
        "router_p99_ms": big["router_p99_ms"],
        "networkx_p50_ms": big["networkx_p50_ms"],
        "speedup_vs_networkx": big["speedup_vs_networkx"],
        "graphs": results,
        "twin_rsus": twin["twin_rsus"] if twin else None,
        "twin_msgs_per_s": twin["twin_msgs_per_s"] if twin else None,
        "trip_time_rerouted_s": None,
        "trip_time_sumo_routing_s": None,
        "twin": twin,
        "machine": machine_info(),
    }
    print(orjson.dumps(out).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
