"""The router: exact against networkx, turn restrictions, closures, alternatives, time."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import numpy as np
import pytest

from citybrain.routing.graph import GraphError, RoadGraph, from_geojson, from_sumo, grid
from citybrain.routing.router import NoRouteError, Router
from citybrain.routing.travel_times import SignalShare, TravelTimes, uniform_delay_s
from common.datadir import resolve_asset


def _nx(graph: RoadGraph, weights: np.ndarray) -> nx.DiGraph:
    g = nx.DiGraph()
    for e in range(graph.n_edges):
        g.add_edge(int(graph.tail[e]), int(graph.head[e]), w=float(weights[e]))
    return g


def test_fastest_route_matches_networkx_dijkstra_on_a_grid() -> None:
    graph = grid(30, 30, seed=3)
    router = Router(graph, TravelTimes.free_flow(graph), landmarks=8)
    reference = _nx(graph, graph.free_flow_s())
    rng = random.Random(7)
    for _ in range(60):
        s, t = rng.randrange(graph.n_nodes), rng.randrange(graph.n_nodes)
        if s == t:
            continue
        route = router.route(graph.node_ids[s], graph.node_ids[t], 0.0)[0]
        assert route.travel_time_s == pytest.approx(
            nx.dijkstra_path_length(reference, s, t, weight="w"), abs=1e-6
        )
        assert route.nodes[0] == graph.node_ids[s] and route.nodes[-1] == graph.node_ids[t]


def _line() -> RoadGraph:
    # a -> b -> c, plus a slow detour a -> d -> c; b -> c may not be entered from a -> b.
    return RoadGraph(
        node_ids=["a", "b", "c", "d"],
        xy=np.zeros((4, 2)),
        edge_ids=["ab", "bc", "ad", "dc"],
        tail=np.array([0, 1, 0, 3]),
        head=np.array([1, 2, 3, 2]),
        length_m=np.array([100.0, 100.0, 300.0, 300.0]),
        speed_mps=np.array([10.0, 10.0, 10.0, 10.0]),
        lanes=np.ones(4, dtype=int),
    )


def test_closures_turn_restrictions_and_no_route() -> None:
    g = _line()
    router = Router(g, TravelTimes.free_flow(g), landmarks=2)
    assert router.route("a", "c", 0.0)[0].edges == ("ab", "bc")
    assert router.route("a", "c", 0.0, closed=["bc"])[0].edges == ("ad", "dc")
    restricted = _line()
    restricted.successors = [(), (), (3,), ()]  # from ab nothing: the turn into bc is banned
    r2 = Router(restricted, TravelTimes.free_flow(restricted), landmarks=2)
    assert r2.route("a", "c", 0.0)[0].edges == ("ad", "dc")
    with pytest.raises(NoRouteError):
        router.route("c", "a", 0.0)
    with pytest.raises(GraphError, match="no node 'z'"):
        router.route("a", "z", 0.0)


def test_departure_time_picks_each_edges_bin() -> None:
    g = _line()
    # bc is jammed (100 s) in the first 5 minutes, free (10 s) afterwards.
    table = np.array([[10.0, 10.0], [100.0, 10.0], [30.0, 30.0], [30.0, 30.0]])
    router = Router(g, TravelTimes(g, table, start_s=0.0, bin_s=300.0), landmarks=2)
    early = router.route("a", "c", 0.0)[0]
    assert early.edges == ("ad", "dc") and early.travel_time_s == 60.0
    late = router.route("a", "c", 300.0)[0]
    assert late.edges == ("ab", "bc") and late.travel_time_s == 20.0
    # Leaving at 285 s, bc is reached at 295 s: still in the jammed bin.
    assert router.route("a", "c", 285.0)[0].edges == ("ad", "dc")


def test_alternatives_are_distinct_and_not_much_slower() -> None:
    graph = grid(12, 12, seed=1)
    router = Router(graph, TravelTimes.free_flow(graph), landmarks=6)
    routes = router.route("n0_0", "n11_11", 0.0, alternatives=3)
    assert len(routes) == 3
    best = routes[0].travel_time_s
    assert all(r.travel_time_s >= best - 1e-9 for r in routes)
    assert all(r.travel_time_s <= 1.5 * best for r in routes)
    assert len({r.edges for r in routes}) == 3


def test_travel_times_from_speeds_flows_and_signals() -> None:
    g = _line()
    share = SignalShare(cycle_s=90, green_s=30)
    tt = TravelTimes.estimate(
        g, 0.0, 300.0, 2,
        speeds_mps={"ab": [5.0, float("nan")]},
        flows_vph={"ad": [0.0, 1800.0]},
        signals={"bc": share},
    )  # fmt: skip
    assert tt.table[0].tolist() == [20.0, 10.0]  # measured, then free flow where NaN
    assert tt.table[2, 0] == 30.0 and tt.table[2, 1] == pytest.approx(30.0 * 1.15)  # BPR v=c
    assert tt.table[1, 0] == pytest.approx(10.0 + uniform_delay_s(share, 0.0))
    assert uniform_delay_s(share, 0.0) == pytest.approx(90 * (2 / 3) ** 2 / 2)
    with pytest.raises(ValueError, match="finite and positive"):
        TravelTimes(g, np.zeros((4, 1)), 0.0, 300.0)


def test_geojson_roads_and_their_errors() -> None:
    line = lambda a, b: {"type": "LineString", "coordinates": [a, b]}  # noqa: E731
    feats = [
        {"geometry": line([0, 0], [0, 100]), "properties": {"id": "s1", "from": "A", "to": "B",
                                                           "speed_kmh": 36}},
        {"geometry": line([0, 100], [100, 100]), "properties": {"id": "s2", "from": "B",
                                                               "to": "C", "oneway": True}},
    ]  # fmt: skip
    g = from_geojson(feats)
    assert g.n_edges == 3 and g.length_m[g.edge("s1")] == pytest.approx(100.0)
    router = Router(g, TravelTimes.free_flow(g), landmarks=2)
    assert router.route("A", "C", 0.0)[0].edges == ("s1", "s2")
    with pytest.raises(NoRouteError):
        router.route("C", "A", 0.0)  # s2 is one way
    with pytest.raises(GraphError, match="property 'to' is missing"):
        from_geojson([{"geometry": line([0, 0], [1, 1]), "properties": {"id": "x", "from": "A"}}])


def test_sumo_net_graph_uses_its_connections() -> None:
    graph = from_sumo(resolve_asset("sumo/resco/ingolstadt7/ingolstadt7.net.xml"))
    router = Router(graph, TravelTimes.free_flow(graph), landmarks=8)
    e = graph.n_edges - 1
    found = 0
    # Every route only takes turns the net's connections allow.
    for _ in range(20):
        e = (e * 7 + 3) % graph.n_edges
        src = graph.node_ids[graph.tail[e]]
        dst = graph.node_ids[graph.head[(e * 5) % graph.n_edges]]
        try:
            route = router.route(src, dst, 0.0)[0]
        except NoRouteError:
            continue
        found += 1
        idx = [graph.edge(x) for x in route.edges]
        for a, b in itertools.pairwise(idx):
            assert b in graph.successors[a]
    assert found >= 10


def test_routes_api_on_a_sumo_net_with_forecast_travel_times(redis_url, redis_client, tmp_path):
    import orjson

    from citybrain.config import CitybrainConfig
    from citybrain.forecast.online import FORECASTS_HASH
    from tests.conftest import api_client

    net = resolve_asset("sumo/resco/ingolstadt1/ingolstadt1.net.xml")
    graph = from_sumo(net)
    edge = graph.edge_ids[0]
    config = CitybrainConfig.model_validate({
        "bus": {"redis_url": redis_url}, "history": {"url": f"sqlite:///{tmp_path}/h.db"},
        "routing": {"graph": str(net), "edge_lanes": {edge: ["rsu-1/cam0/L1"]},
                    "refresh_s": 10},
    })  # fmt: skip
    redis_client.hset(FORECASTS_HASH, "rsu-1/cam0/L1", orjson.dumps({
        "detector": "rsu-1/cam0/L1", "generated_ms": 0, "bin_s": 300, "method": "model",
        "reason": None, "flows_veh_h": [900.0] * 12}))  # fmt: skip
    client = api_client(config, "viewer", redis_client)
    src, dst = graph.node_ids[graph.tail[0]], graph.node_ids[graph.head[0]]
    found = client.get("/routes", params={"from": src, "to": dst, "alternatives": 2})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["routes"][0]["nodes"][0] == src and body["routes"][0]["nodes"][-1] == dst
    assert body["travel_times"].startswith("forecasts (1 of")
    assert body["routes"][0]["travel_time_s"] > 0
    bad = client.get("/routes", params={"from": src, "to": "nowhere"})
    assert bad.status_code == 422 and "no node 'nowhere'" in bad.json()["detail"]
    closed = client.get("/routes", params={"from": src, "to": dst, "avoid": ",".join(
        graph.edge_ids)})  # fmt: skip
    assert closed.status_code == 404


def test_routes_api_says_when_routing_is_not_configured(redis_url, redis_client, tmp_path):
    from citybrain.config import CitybrainConfig
    from tests.conftest import api_client

    config = CitybrainConfig.model_validate(
        {"bus": {"redis_url": redis_url}, "history": {"url": f"sqlite:///{tmp_path}/h.db"}}
    )
    out = api_client(config, "viewer", redis_client).get("/routes", params={"from": "a", "to": "b"})
    assert out.status_code == 503 and "routing.graph" in out.json()["detail"]


def _line_graph() -> RoadGraph:
    """A -> B, then at B either straight on to C (one edge) or around by D (two edges)."""
    return RoadGraph(
        node_ids=["A", "B", "C", "D"],
        xy=np.array([(0, 0), (100, 0), (200, 0), (150, 50)], dtype=float),
        edge_ids=["AB", "BC", "BD", "DC"],
        tail=np.array([0, 1, 1, 3]),
        head=np.array([1, 2, 3, 2]),
        length_m=np.array([100.0, 100.0, 70.0, 70.0]),
        speed_mps=np.array([10.0, 10.0, 10.0, 10.0]),
        lanes=np.ones(4, dtype=np.int64),
    )


def test_routes_between_edges_pay_turn_delays() -> None:
    graph = _line_graph()
    free = TravelTimes.free_flow(graph)
    router = Router(graph, free, landmarks=2)
    # Free flow: straight on (10 + 10 s) beats the way round (10 + 7 + 7 s).
    best = router.route_between_edges("AB", "BC", 0.0)[0]
    assert best.edges == ("AB", "BC") and best.travel_time_s == pytest.approx(20.0)
    # A queue on the straight-on movement at B: the way round is faster now.
    router.update(free.with_turn_delays({("AB", "BC"): 30.0}))
    best = router.route_between_edges("AB", "DC", 0.0)[0]
    assert best.edges == ("AB", "BD", "DC")
    assert router.route_between_edges("AB", "BC", 0.0)[0].travel_time_s == pytest.approx(50.0)
    # evaluate() times a given route on the same costs, and refuses impossible ones.
    assert router.evaluate(["AB", "BC"], 0.0).travel_time_s == pytest.approx(50.0)
    assert router.evaluate(["AB", "BD", "DC"], 0.0).travel_time_s == pytest.approx(24.0)
    with pytest.raises(NoRouteError, match="no turn from 'BC' to 'BD'"):
        router.evaluate(["AB", "BC", "BD"], 0.0)
    with pytest.raises(NoRouteError, match="destination edge 'DC' is closed"):
        router.route_between_edges("AB", "DC", 0.0, closed=["DC"])
    assert router.route_between_edges("AB", "AB", 5.0)[0].arrive_s == pytest.approx(15.0)
    with pytest.raises(ValueError, match="no turn from edge 'BC' to edge 'AB'"):
        free.with_turn_delays({("BC", "AB"): 5.0})
    with pytest.raises(ValueError, match="finite and >= 0"):
        free.with_turn_delays({("AB", "BC"): float("nan")})


def test_sumo_graph_knows_junction_crossing_times_and_where_turns_give_way() -> None:
    graph = from_sumo(resolve_asset("sumo/resco/cologne3/cologne3.net.xml"))
    assert len(graph.turn_s) > 50 and all(0 < t < 60 for t in graph.turn_s.values())
    # cologne3 has priority junctions: their minor links give way; signalled turns do not.
    assert graph.yield_turns and graph.yield_turns <= set(graph.turn_s)
    grid_net = from_sumo(resolve_asset("sumo/resco/grid4x4/grid4x4.net.xml"))
    left, straight = grid_net.edge("A1B1"), grid_net.edge("B1C1")
    # A left turn is slower through the junction than going straight on.
    assert grid_net.turn_s[(left, grid_net.edge("B1B2"))] > grid_net.turn_s[(left, straight)]
    assert not grid_net.yield_turns  # every junction has signals


def test_live_queues_through_ingest_add_their_wait_to_the_turns_out_of_an_edge(
    redis_url, redis_client, tmp_path
) -> None:
    import redis as redis_lib

    from citybrain.config import CitybrainConfig
    from citybrain.ingest import IngestWorker
    from citybrain.routing.service import RoutingService
    from citybrain.state import TrafficState, now_ms
    from common.bus import BusConfig, StreamProducer
    from common.schemas import LaneAggregates, LaneInterval, RoadUserClass, encode_message

    net = resolve_asset("sumo/resco/ingolstadt1/ingolstadt1.net.xml")
    graph = from_sumo(net)
    edge = next(e for e in range(graph.n_edges) if graph.successors[e])
    after = graph.successors[edge][0]
    config = CitybrainConfig.model_validate({
        "bus": {"redis_url": redis_url, "partitions": 4},
        "ingest": {"consumer": "w1", "block_ms": 100},
        "routing": {"graph": str(net), "refresh_s": 10,
                    "edge_lanes": {graph.edge_ids[edge]: ["rsu-q/cam0/L1"]}},
    })  # fmt: skip
    service = RoutingService(config.routing, redis_client, TrafficState(redis_client, config))
    route = [graph.edge_ids[edge], graph.edge_ids[after]]
    service.refresh(now_s=1e9)
    assert service.source == "free_flow"
    free = service.router.evaluate(route, 0.0).travel_time_s
    # The camera counted 30 cars in the last minute and ends it with 10 queued: by Little's
    # law a car joining now waits 10 / (30 / 60 s) = 20 s.
    start = now_ms() - 60_000
    interval = LaneAggregates(
        rsu_id="rsu-q", camera_id="cam0", run_id="r", seq=0, interval_start_ms=start,
        interval_s=60, observed_s=60,
        lanes=[LaneInterval(lane_id="L1", counts={RoadUserClass.car: 30}, queue_vehicles=10)],
    )  # fmt: skip
    StreamProducer(redis_client, BusConfig(partitions=4)).publish(
        [("rsu-q", encode_message(interval))]
    )
    IngestWorker(config, redis_lib.Redis.from_url(redis_url)).run(idle_exit_s=0.5)
    service.refresh(now_s=2e9)
    assert service.source == "live queues (1 edges)"
    waited = service.router.evaluate(route, 0.0).travel_time_s
    assert waited - free == pytest.approx(20.0, abs=0.5)
    # The edge itself (ending before the junction) is not slower.
    assert service.router.evaluate(route[:1], 0.0).travel_time_s == pytest.approx(
        graph.free_flow_s()[edge]
    )


def test_signal_delay_from_the_active_plan_of_the_signal_an_edge_ends_at(redis_client) -> None:
    from citybrain.config import RoutingConfig
    from citybrain.intersections import Intersection, IntersectionStore
    from citybrain.routing.service import RoutingService
    from citybrain.signal_plans import PlanSpec, SignalConfig, SignalPlanStore
    from tests.test_api_center import INTERSECTION
    from tests.test_api_signals import SIGNALS

    net = resolve_asset("sumo/resco/ingolstadt1/ingolstadt1.net.xml")
    graph = from_sumo(net)
    edge = next(e for e in range(graph.n_edges) if graph.successors[e])
    route = [graph.edge_ids[edge], graph.edge_ids[graph.successors[edge][0]]]
    cfg = RoutingConfig.model_validate({
        "graph": str(net), "refresh_s": 10,
        # the signal's links 0 and 1 start on these lanes
        "edge_lanes": {route[0]: ["rsu-x/cam0/S1", "rsu-x/cam0/S2"]},
    })  # fmt: skip
    service = RoutingService(cfg, redis_client)
    service.refresh(now_s=1e9)
    free = service.router.evaluate(route, 0.0).travel_time_s
    IntersectionStore(redis_client).put(Intersection.model_validate({**INTERSECTION, "id": "x"}))
    store = SignalPlanStore(redis_client)
    store.put_config("x", SignalConfig.model_validate(SIGNALS), "test")
    # An operator's plan: 30 s for the links from this edge, 20 s for the left turn, and
    # 3 s yellow + 2 s all-red after each: a 60 s cycle with these links green half of it.
    store.override("x", PlanSpec.model_validate(
        {"stages": [{"phase": 0, "green_s": 30}, {"phase": 1, "green_s": 20}]}),
        "op", "test")  # fmt: skip
    service.refresh(now_s=2e9)
    assert service.source == "signal plans (1 edges)"
    waited = service.router.evaluate(route, 0.0).travel_time_s
    assert waited - free == pytest.approx(60 * (1 - 30 / 60) ** 2 / 2)  # Webster, 7.5 s
    # The edge's own time grows, so even a route ending on it pays the wait.
    assert service.router.evaluate(route[:1], 0.0).travel_time_s > graph.free_flow_s()[edge]
