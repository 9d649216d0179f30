"""Route query latency: citybrain's ALT router against networkx Dijkstra, same graph, same weights.

Graphs: a RESCO SUMO network (turns from its connections) and a generated street grid of
``--grid``² nodes (default 100 x 100 = 10,000 nodes).  Weights: free-flow travel times
(one bin, so networkx sees exactly the router's costs); every query's travel time is
checked against networkx's.  Queries are random origin/destination pairs (fixed seed),
timed one after the other in one process, side by side.

Then the digital twin, twice:

- at scale: a generated 6 x 6 signalised grid (SUMO's netgenerate and randomTrips, made in
  a temporary folder), one virtual RSU per approach (144), cameras at 10 Hz, for
  ``--twin-scale-s`` simulated seconds; ``twin_rsus`` and ``twin_msgs_per_s`` come from
  this run, with the dead letters and what ingest had not acked 30 s after the end;
- on a RESCO scenario (``--twin-scenario``), at 1 Hz for the whole hour: the citybrain
  controller fed through the bus against the same controller fed directly from the
  simulator;
- rerouting, on a RESCO scenario (``--reroute-scenario``), at 1 Hz for the whole hour,
  over ``--reroute-seeds`` seeds: the same ``--reroute-share`` of the cars (chosen by a
  hash of their id) routed at departure by citybrain (its router on the signal delays
  measured from what came through the bus), by SUMO's own routing (its rerouting device,
  on the travel times of every edge), or by nobody (the scenario's routes).  Every run
  is a twin with the citybrain controller through the bus; only the routing differs.
  ``trip_time_rerouted_s`` and ``trip_time_sumo_routing_s``: the cars' mean time from
  scheduled departure to arrival (unfinished trips count until the end), over the seeds.

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
    """``exact``: the graph has no turn restrictions and no junction crossing times, so
    networkx's node-based cost must equal the router's; otherwise the router's (which
    obeys and counts them) may only be longer."""
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
    restricted = (
        0  # turns (restrictions, crossing times) made it slower than networkx's, or impossible
    )
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
        "longer_or_none_by_turns": restricted,
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


def _twin_run(job: tuple) -> tuple:
    from citybrain.sim.harness import HarnessOptions, run
    from common.redis_server import LocalRedisServer

    scenario, by, seed, share = job
    server = LocalRedisServer().start()
    try:
        r = run(scenario, "citybrain", seed, HarnessOptions(
            bus_url=server.url, reroute_share=share, reroute_by=by))  # fmt: skip
    finally:
        server.stop()
    return by, seed, r


def run_rerouting(name: str, seeds: int, share: float, workers: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from citybrain.sim.harness import load_scenario
    from common.datadir import resolve_asset

    scenario = load_scenario(resolve_asset(f"sumo/resco/{name}"))
    jobs = [(scenario, by, seed, share) for seed in range(seeds)
            for by in ("citybrain", "sumo", "none")]  # fmt: skip
    arms: dict[str, dict[str, list]] = {}
    with ProcessPoolExecutor(workers) as pool:
        for by, seed, r in pool.map(_twin_run, jobs):
            a = arms.setdefault(
                by,
                {
                    "trip": [],
                    "delay": [],
                    "changed": [],
                    "arrived": [],
                    "cars": [],
                    "sync_waits": 0,
                    "fallback_steps": 0,
                },
            )
            a["trip"].append(r.trip_time_rerouted)
            a["delay"].append(r.delay)
            a["changed"].append(r.reroutes_changed)
            a["arrived"].append(r.rerouted_completed)
            a["cars"].append(r.rerouted)
            a["sync_waits"] += r.bus_sync_waits
            a["fallback_steps"] += r.fallback_steps
            print(f"rerouting {name} seed {seed} by {by}: cars {r.rerouted}, changed "
                  f"{r.reroutes_changed}, trip {r.trip_time_rerouted:.1f} s, network delay "
                  f"{r.delay:.1f} s", file=sys.stderr)  # fmt: skip
    mean = lambda xs: round(float(np.mean(xs)), 2)  # noqa: E731
    out: dict = {"scenario": name, "seeds": seeds, "share": share}
    for by, a in arms.items():
        out[by] = {
            "trip_time_s": mean(a["trip"]), "trip_time_by_seed": [round(x, 1) for x in a["trip"]],
            "trip_time_sem_s": round(float(np.std(a["trip"], ddof=1) / np.sqrt(len(a["trip"]))), 2)
            if len(a["trip"]) > 1 else None,
            "network_delay_s": mean(a["delay"]), "cars": mean(a["cars"]),
            "routes_changed": mean(a["changed"]), "arrived": mean(a["arrived"]),
            "sync_waits": a["sync_waits"], "fallback_steps": a["fallback_steps"],
        }  # fmt: skip
    # Seed by seed, the same cars: how often citybrain's routing beat SUMO's.
    out["citybrain_faster_seeds"] = sum(
        c < s for c, s in zip(arms["citybrain"]["trip"], arms["sumo"]["trip"], strict=True)
    )
    return out


def generate_grid(folder: Path, n: int = 6, end_s: int = 900, seed: int = 1) -> Path:
    """An n x n signalised street grid with random trips, by SUMO's own tools."""
    import subprocess

    from citybrain.sim.sumo_env import ensure_sumo_env

    home = Path(ensure_sumo_env())
    net, routes = folder / "grid.net.xml", folder / "grid.rou.xml"
    subprocess.run(
        [str(home / "bin" / "netgenerate"), "--grid", "--grid.number", str(n),
         "--grid.length", "200", "--grid.attach-length", "150", "--default.lanenumber", "2",
         "--tls.guess", "true", "--no-turnarounds", "true", "-o", str(net)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, str(home / "tools" / "randomTrips.py"), "-n", str(net),
         "-o", str(folder / "grid.trips.xml"), "-r", str(routes), "-b", "0", "-e", str(end_s),
         "-p", "0.6", "--fringe-factor", "10", "--seed", str(seed)],
        check=True, capture_output=True,
    )  # fmt: skip
    (folder / "grid.sumocfg").write_text(
        '<configuration><input><net-file value="grid.net.xml"/>'
        '<route-files value="grid.rou.xml"/></input>'
        f'<time><begin value="0"/><end value="{end_s}"/></time></configuration>'
    )
    return folder


def run_twin_at_scale(simulated_s: int) -> dict:
    import tempfile

    import redis

    from citybrain.config import CitybrainConfig
    from citybrain.sim.harness import HarnessOptions, load_scenario, run
    from citybrain.state import TrafficState
    from common.redis_server import LocalRedisServer

    with tempfile.TemporaryDirectory(prefix="cb-twin-grid-") as tmp:
        scenario = load_scenario(generate_grid(Path(tmp)), end=simulated_s)
        server = LocalRedisServer().start()
        try:
            result = run(scenario, "citybrain",
                         options=HarnessOptions(bus_url=server.url, step_s=0.1))  # fmt: skip
            client = redis.Redis.from_url(server.url)
            state = TrafficState(client, CitybrainConfig.model_validate(
                {"bus": {"redis_url": server.url}}))  # fmt: skip
            dead = state.dead_letters()
            client.close()
        finally:
            server.stop()
    return {
        "network": "6 x 6 grid (netgenerate), 36 signals", "hz": 10,
        "twin_rsus": result.bus_rsus, "twin_msgs": result.bus_messages,
        "twin_msgs_per_s": round(result.bus_messages / result.wall_s, 1),
        "simulated_s": simulated_s, "wall_s": round(result.wall_s, 1),
        "sync_waits": result.bus_sync_waits, "fallback_steps": result.fallback_steps,
        "dead_letters": dead, "unread_or_pending_at_end": result.bus_undrained,
        "delay_s": round(result.delay, 2),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=100, help="grid side (nodes = side²)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--landmarks", type=int, default=16)
    parser.add_argument("--scenario", default="ingolstadt7", help="RESCO net for the SUMO graph")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--twin-scenario", default="grid4x4", help="'' to skip the twin")
    parser.add_argument("--twin-scale-s", type=int, default=300,
                        help="simulated seconds of the 144-RSU, 10 Hz twin (0: skip)")  # fmt: skip
    parser.add_argument("--reroute-scenario", default="arterial4x4", help="'' to skip rerouting")
    parser.add_argument("--reroute-seeds", type=int, default=6)
    parser.add_argument("--reroute-share", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2, help="rerouting twins run at once")
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
              f"longer or none by turns {r['longer_or_none_by_turns']}",
              file=sys.stderr)  # fmt: skip
    big = results[f"grid{args.grid}x{args.grid}"]
    twin = run_twin(args.twin_scenario) if args.twin_scenario else None
    scale = run_twin_at_scale(args.twin_scale_s) if args.twin_scale_s else None
    if scale:
        print(f"twin at scale: {scale['twin_rsus']} virtual RSUs at {scale['hz']} Hz, "
              f"{scale['twin_msgs_per_s']} msg/s, {scale['simulated_s']} simulated s in "
              f"{scale['wall_s']} s, dead letters {scale['dead_letters']}, unread or pending "
              f"at the end {scale['unread_or_pending_at_end']}", file=sys.stderr)  # fmt: skip
    rerouting = (
        run_rerouting(args.reroute_scenario, args.reroute_seeds, args.reroute_share, args.workers)
        if args.reroute_scenario else None
    )  # fmt: skip
    if rerouting:
        print(f"rerouting {args.reroute_scenario}: trip time citybrain "
              f"{rerouting['citybrain']['trip_time_s']} s, SUMO's routing "
              f"{rerouting['sumo']['trip_time_s']} s, own routes {rerouting['none']['trip_time_s']}"
              f" s; citybrain faster on {rerouting['citybrain_faster_seeds']} of "
              f"{args.reroute_seeds} seeds", file=sys.stderr)  # fmt: skip
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
        "twin_rsus": scale["twin_rsus"] if scale else None,
        "twin_msgs_per_s": scale["twin_msgs_per_s"] if scale else None,
        "twin_at_scale": scale,
        "trip_time_rerouted_s": rerouting["citybrain"]["trip_time_s"] if rerouting else None,
        "trip_time_sumo_routing_s": rerouting["sumo"]["trip_time_s"] if rerouting else None,
        "trip_time_own_routes_s": rerouting["none"]["trip_time_s"] if rerouting else None,
        "rerouting": rerouting,
        "twin": twin,
        "machine": machine_info(),
    }
    print(orjson.dumps(out).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
