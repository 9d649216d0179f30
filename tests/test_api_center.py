"""The traffic-center API: keys and roles, intersections, live lanes, history, SSE, metrics."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import redis

from citybrain.auth import KEYS_HASH
from citybrain.config import CitybrainConfig
from citybrain.history import open_history
from citybrain.ingest import IngestWorker
from common.bus import BusConfig, StreamProducer
from common.schemas import LaneAggregates, LaneInterval, RoadUserClass, encode_message
from tests.conftest import api_client

RSU = "rsu-x"
INTERSECTION = {
    "id": "x-1",
    "name": "First and Main",
    "approaches": [
        {"name": "south", "lanes": [{"rsu_id": RSU, "lane_id": lane} for lane in ("S1", "S2")]},
        {"name": "north", "lanes": [{"rsu_id": RSU, "lane_id": "N1"}]},
    ],
}


@pytest.fixture
def config(redis_url: str, tmp_path: Path) -> CitybrainConfig:
    return CitybrainConfig.model_validate(
        {"bus": {"redis_url": redis_url}, "history": {"url": f"sqlite:///{tmp_path}/h.db"}}
    )


def publish_lanes(client: redis.Redis, config: CitybrainConfig, n: int = 3) -> int:
    """``n`` 10 s intervals ending now: S1 counts 2 cars and 1 bus a time, S2 1 car."""
    now = int(time.time() * 1000)
    start = now // 10_000 * 10_000 - n * 10_000
    messages = [
        LaneAggregates(
            rsu_id=RSU,
            camera_id="cam0",
            run_id="r",
            seq=i,
            interval_start_ms=start + i * 10_000,
            interval_s=10,
            observed_s=10,
            lanes=[
                LaneInterval(
                    lane_id="S1",
                    approach="south",
                    counts={RoadUserClass.car: 2, RoadUserClass.bus: 1},
                    occupancy=0.4,
                    mean_speed_mps=8.0,
                    queue_vehicles=3,
                    queue_m=15.0,
                ),
                LaneInterval(
                    lane_id="S2",
                    approach="south",
                    counts={RoadUserClass.car: 1},
                    occupancy=0.2,
                    mean_speed_mps=12.0,
                    queue_vehicles=1,
                    queue_m=6.0,
                ),
            ],
        )
        for i in range(n)
    ]
    StreamProducer(client, BusConfig(partitions=config.bus.partitions)).publish(
        [(RSU, encode_message(m)) for m in messages]
    )
    IngestWorker(config, client).run(idle_exit_s=0.3)
    return start


def test_keys_and_roles_guard_every_route(config: CitybrainConfig, redis_client) -> None:
    admin = api_client(config, "admin", redis_client)
    anonymous = api_client(config, "viewer", redis_client)
    anonymous.headers.pop("Authorization")
    missing = anonymous.get("/rsus")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/problem+json"
    assert anonymous.get("/health").status_code == 200  # probes need no key
    assert anonymous.get("/rsus", headers={"X-API-Key": "cbk_00_nope"}).status_code == 401

    made = admin.post("/admin/keys", json={"name": "ops desk", "role": "viewer"})
    assert made.status_code == 201
    secret = made.json()["key"]
    viewer = {"Authorization": f"Bearer {secret}"}
    assert anonymous.get("/rsus", headers=viewer).status_code == 200
    denied = anonymous.put("/intersections/x-1", json=INTERSECTION, headers=viewer)
    assert denied.status_code == 403 and "operator" in denied.json()["detail"]
    assert anonymous.get("/admin/keys", headers=viewer).status_code == 403

    # Stored hashed: the secret is nowhere in Redis, and the listing never shows it.
    stored = b"".join(redis_client.hgetall(KEYS_HASH).values())
    assert secret.encode() not in stored and secret.split("_", 2)[2].encode() not in stored
    listed = admin.get("/admin/keys").json()
    assert {"ops desk", "test admin"} <= {k["name"] for k in listed}
    assert all("key" not in k for k in listed)

    key_id = made.json()["key_id"]
    assert admin.delete(f"/admin/keys/{key_id}").status_code == 204
    assert admin.delete(f"/admin/keys/{key_id}").status_code == 404
    assert api_client(config, "viewer", redis_client).get("/rsus").status_code == 200
    revoked_app = admin  # same process: its cache forgot the key at once
    assert revoked_app.get("/rsus", headers=viewer).status_code == 401


def test_intersection_registry_and_live_state(config: CitybrainConfig, redis_client) -> None:
    viewer = api_client(config, "viewer", redis_client)
    operator = api_client(config, "operator", redis_client)
    wrong = operator.put("/intersections/other", json=INTERSECTION)
    assert wrong.status_code == 400 and "path" in wrong.json()["detail"]
    invalid = operator.put("/intersections/x-1", json={**INTERSECTION, "approaches": []})
    assert invalid.status_code == 422
    assert operator.put("/intersections/x-1", json=INTERSECTION).status_code == 201
    assert operator.put("/intersections/x-1", json=INTERSECTION).status_code == 200
    listing = viewer.get("/intersections", params={"limit": 1}).json()
    assert listing["total"] == 1 and listing["items"][0]["name"] == "First and Main"

    publish_lanes(redis_client, config)
    state = viewer.get("/intersections/x-1/state").json()
    south, north = state["approaches"]
    # 30 s watched: S1 counted 6 cars and 3 buses -> 1080 veh/h, S2 3 cars -> 360 veh/h.
    assert [lane["flow_veh_h"] for lane in south["lanes"]] == [1080.0, 360.0]
    assert south["flow_veh_h"] == 1440.0 and state["flow_veh_h"] == 1440.0
    assert south["counts"] == {"bus": 3, "car": 9}
    assert (south["queue_vehicles"], south["queue_m"]) == (4, 15.0)
    assert south["occupancy"] == pytest.approx(0.3)
    assert south["mean_speed_mps"] == pytest.approx((8 * 1080 + 12 * 360) / 1440, abs=0.01)
    assert north["lanes_reporting"] == 0 and north["flow_veh_h"] is None  # N1 never reported

    lanes = viewer.get(f"/rsus/{RSU}/lanes").json()["lanes"]
    assert {lane["lane_id"]: lane["stale"] for lane in lanes} == {"S1": False, "S2": False}
    assert operator.delete("/intersections/x-1").status_code == 204
    assert viewer.get("/intersections/x-1/state").status_code == 404


def test_history_queries_and_their_errors(config: CitybrainConfig, redis_client) -> None:
    start = publish_lanes(redis_client, config, n=7)
    viewer = api_client(config, "viewer", redis_client)
    since = (start // 60_000 * 60_000) / 1000
    reply = viewer.get(f"/rsus/{RSU}/history", params={"bin": 60, "since": since, "lane_id": "S1"})
    assert reply.status_code == 200
    bins = reply.json()["bins"]
    assert sum(b["observed_s"] for b in bins) == 70.0
    assert sum(b["vehicles"] for b in bins) == 21
    assert viewer.get(f"/rsus/{RSU}/history", params={"bin": 90}).status_code == 400
    operator = api_client(config, "operator", redis_client)
    operator.put("/intersections/x-1", json=INTERSECTION)
    since5 = (start // 300_000 * 300_000) / 1000  # bins are those whose start is in range
    grouped = viewer.get("/intersections/x-1/history", params={"bin": 300, "since": since5})
    (rsu,) = grouped.json()
    assert {b["lane_id"] for b in rsu["bins"]} == {"S1", "S2"}
    # The same history straight from the store the ingest wrote.
    store = open_history(config.history.url)
    assert sum(b.vehicles for b in store.bins(RSU, 300, int(since5 * 1000), 2**53)) == 28
    store.close()


def test_live_feed_sends_state_events(config: CitybrainConfig, redis_client) -> None:
    publish_lanes(redis_client, config)
    operator = api_client(config, "operator", redis_client)
    operator.put("/intersections/x-1", json=INTERSECTION)
    with operator.stream(
        "GET", "/intersections/x-1/feed", params={"max_events": 1, "interval": 0.2}
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        text = "".join(reply.iter_text())
    event, data = text.strip().split("\n", 1)
    assert event == "event: state"
    assert orjson.loads(data.removeprefix("data: "))["flow_veh_h"] == 1440.0


def test_rsu_registry_health_lag_and_metrics(config: CitybrainConfig, redis_client) -> None:
    operator = api_client(config, "operator", redis_client)
    info = {"name": "5th & Pine NE corner", "lat": 47.6, "lon": -122.33, "cameras": ["cam0"]}
    assert operator.put("/rsus/rsu-new", json=info).status_code == 201
    listed = operator.get("/rsus").json()
    expected = {"info": {**info, "intersection_id": None}, "cameras": [], "registered": True}
    assert listed["items"][0] == {"rsu_id": "rsu-new", **expected}
    assert operator.put("/rsus/bad id", json=info).status_code == 422
    # Lag: entries nobody has read for longer than lag_alert_s make /health degraded.
    lagging = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"lag_alert_s": 0.05})}
    )
    StreamProducer(redis_client, config.bus).publish([(RSU, b'{"kind": "frame"}')])
    time.sleep(0.1)
    health = api_client(lagging, "viewer", redis_client).get("/health").json()
    assert health["status"] == "degraded" and health["oldest_unread_age_s"] >= 0.05
    assert "ingest lagging" in health["problems"][0]
    metrics = operator.get("/metrics").text
    assert "citybrain_ingest_lag_seconds" in metrics and "citybrain_ingest_unread 1.0" in metrics


def test_one_rsu_reads_alone_and_unknown_ones_are_404(
    config: CitybrainConfig, redis_client
) -> None:
    publish_lanes(redis_client, config)
    viewer = api_client(config, "viewer", redis_client)
    one = viewer.get(f"/rsus/{RSU}").json()
    assert (
        one["rsu_id"] == RSU and not one["registered"] and one["cameras"][0]["camera_id"] == "cam0"
    )
    assert viewer.get("/rsus/nobody").status_code == 404


def test_health_is_reused_briefly_but_never_while_down(
    config: CitybrainConfig, redis_client
) -> None:
    cached = config.model_copy(update={"api": config.api.model_copy(update={"health_cache_s": 30})})
    api = api_client(cached, "viewer", redis_client)
    assert api.get("/health").json()["ingest_unread"] == 0
    StreamProducer(redis_client, config.bus).publish([(RSU, b'{"kind": "frame"}')])
    assert api.get("/health").json()["ingest_unread"] == 0  # the report of a moment ago
    fresh = api_client(config, "viewer", redis_client)  # a new app has no report yet
    assert fresh.get("/health").json()["ingest_unread"] == 1

    down = CitybrainConfig.model_validate(
        {"bus": {"redis_url": "redis://127.0.0.1:1/0"}, "api": {"health_cache_s": 30},
         "history": {"enabled": False}}
    )  # fmt: skip
    from fastapi.testclient import TestClient

    from citybrain.api import create_app

    app = create_app(down)
    probe = TestClient(app)
    assert probe.get("/health").json()["status"] == "down"
    assert app.state.context.health_cache is None  # not reused: recovery shows at once
