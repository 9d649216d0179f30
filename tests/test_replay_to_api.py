"""Acceptance: the real intersection clip through the RSU, the bus, ingest and the API."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from citybrain.api import create_app
from citybrain.config import CitybrainConfig
from citybrain.ingest import IngestWorker
from common.bus import discover_streams
from common.schemas import FrameObjects
from rsu.replay import ReplaySummary, run_replay
from tests.conftest import api_client

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "replay_data" / "intersection_beijing.yaml"
FRAMES = 60

# Cars in frame 0 of intersection.mp4, boxed by hand on a pixel grid (x1, y1, x2, y2).
HAND_BOXED_CARS = {
    "red hatchback, near left": (224, 283, 300, 356),
    "dark SUV, near centre": (345, 262, 410, 340),
    "silver sedan, right edge": (830, 278, 960, 358),
    "black sedan, centre right": (615, 217, 720, 275),
    "green taxi, bottom edge": (155, 485, 275, 540),
}


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture
def replayed(redis_url: str) -> tuple[ReplaySummary, list[dict]]:
    summary = run_replay(
        SCENE, overrides={"bus": {"redis_url": redis_url}}, max_frames=FRAMES, progress=False
    )
    client = redis.Redis.from_url(redis_url)
    messages = []
    for stream in discover_streams(client, 8):
        for _, fields in client.xrange(stream):
            messages.append(orjson.loads(fields[b"m"]))
    client.close()
    return summary, messages


def frames_of(messages: list[dict]) -> list[dict]:
    return sorted((m for m in messages if m["kind"] == "frame"), key=lambda m: m["seq"])


def test_replay_finds_the_vehicles_of_the_first_frame(replayed) -> None:
    summary, messages = replayed
    frames = frames_of(messages)
    assert summary.frames == FRAMES and len(frames) == FRAMES
    assert [f["seq"] for f in frames] == list(range(FRAMES))
    first = frames[0]["objects"]
    vehicles = [o for o in first if o["category"] in {"car", "bus", "truck", "motorcycle"}]
    # By eye, frame 0 shows 30+ vehicles; 26 cars are in plain view of a 640 px detector.
    assert len(vehicles) >= 20, Counter(o["category"] for o in first)
    # Found as a vehicle: the COCO model scores the dark SUV as a truck, and NMS keeps one
    # class per vehicle (car, bus and truck suppress each other).
    boxes = [tuple(o["bbox"]) for o in vehicles]
    for name, box in HAND_BOXED_CARS.items():
        best = max((iou(box, c) for c in boxes), default=0.0)
        assert best >= 0.5, f"{name}: best IoU {best:.2f}"


def test_replay_messages_carry_lanes_timing_and_health(replayed) -> None:
    summary, messages = replayed
    frames = frames_of(messages)
    lanes = Counter(o.get("lane_id") for f in frames for o in f["objects"])
    assert lanes["S_in_1"] > 0 and lanes["S_out"] > 0
    stamps = [f["captured_at_ms"] for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] == pytest.approx(59 * 1000 / 30, 2)
    health = [m for m in messages if m["kind"] == "health"]
    assert health[-1]["status"] == "down" and health[-1]["frames_processed"] == FRAMES
    totals = Counter(o["category"] for f in frames for o in f["objects"])
    assert dict(totals) == summary.detections
    assert summary.latency["pipeline"]["p50_ms"] > summary.latency["inference"]["p50_ms"] > 0


def test_api_serves_the_replayed_state(replayed, redis_url: str) -> None:
    summary, messages = replayed
    frames = frames_of(messages)
    config = CitybrainConfig.model_validate({"bus": {"redis_url": redis_url}})
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.5)
    assert stats.applied == len(messages) and stats.dead_lettered == 0
    api = api_client(config, "viewer")

    health = api.get("/health").json()
    assert health["status"] == "ok"
    assert (health["ingest_unread"], health["ingest_pending"], health["rsus"]) == (0, 0, 1)

    rsus = api.get("/rsus").json()
    assert rsus["total"] == 1
    (camera,) = rsus["items"][0]["cameras"]
    assert rsus["items"][0]["rsu_id"] == summary.rsu_id == "bj-overpass-01"
    assert camera["status"] == "down" and not camera["stale"]  # the replay ended

    state = api.get(f"/rsus/{summary.rsu_id}/state").json()
    (cam,) = state["cameras"]
    assert FrameObjects.model_validate(cam["frame"]) == FrameObjects.model_validate(frames[-1])
    assert cam["frames_processed"] == FRAMES and cam["fps"] > 0
    assert cam["latency"]["p99_ms"] >= cam["latency"]["p50_ms"] > 0
    assert cam["publish_to_state_ms"] >= 0

    counts = api.get(f"/rsus/{summary.rsu_id}/counts", params={"lane_id": "*", "bin": 3600})
    assert counts.status_code == 200
    bins = counts.json()["bins"]
    assert sum(b["frames"] for b in bins) == FRAMES
    observed: Counter[str] = Counter()
    for b in bins:
        observed.update(b["observations"])
    assert dict(observed) == summary.detections

    lane = api.get(f"/rsus/{summary.rsu_id}/counts", params={"lane_id": "S_in_1", "bin": 3600})
    in_lane = Counter(
        o["category"] for f in frames for o in f["objects"] if o.get("lane_id") == "S_in_1"
    )
    lane_obs: Counter[str] = Counter()
    for b in lane.json()["bins"]:
        lane_obs.update(b["observations"])
    assert lane_obs == in_lane


def test_api_errors_are_problem_json(redis_url: str) -> None:
    config = CitybrainConfig.model_validate({"bus": {"redis_url": redis_url}})
    api = api_client(config, "viewer")
    missing = api.get("/rsus/nobody/state")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "nobody" in missing.json()["detail"]
    bad_time = api.get("/rsus/nobody/counts", params={"since": "yesterday-ish"})
    assert bad_time.status_code == 422 and bad_time.json()["title"] == "Invalid request"
    assert "since" in bad_time.json()["detail"]
    bad_bin = api.get("/rsus/nobody/counts", params={"bin": 7})
    assert bad_bin.status_code == 400 and "multiple of the base bin" in bad_bin.json()["detail"]
    backwards = api.get(
        "/rsus/nobody/counts", params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01"}
    )
    assert backwards.status_code == 400
    too_many = api.get("/rsus/nobody/counts", params={"since": "2000-01-01", "bin": 10})
    assert too_many.status_code == 400 and "bins" in too_many.json()["detail"]
    assert api.get("/openapi.json").json()["paths"].keys() >= {
        "/health",
        "/rsus",
        "/rsus/{rsu_id}/state",
        "/rsus/{rsu_id}/counts",
    }
    assert api.get("/docs").status_code == 200


def test_api_reports_redis_down() -> None:
    config = CitybrainConfig.model_validate({"bus": {"redis_url": "redis://127.0.0.1:1/0"}})
    api = TestClient(create_app(config), headers={"Authorization": "Bearer cbk_0a_secret"})
    assert api.get("/health").json()["status"] == "down"
    unreachable = api.get("/rsus")  # the key cannot even be checked: 503, not 401
    assert unreachable.status_code == 503
    assert unreachable.headers["content-type"] == "application/problem+json"


def test_tracked_cars_keep_one_id_across_the_replay(replayed) -> None:
    _, messages = replayed
    frames = frames_of(messages)
    # These three stay in view (two wait at the stop line, one drives through) for 2 s.
    for name in (
        "red hatchback, near left",
        "black sedan, centre right",
        "green taxi, bottom edge",
    ):
        box = HAND_BOXED_CARS[name]
        first = max(frames[0]["objects"], key=lambda o: iou(box, o["bbox"]))
        track_id, previous = first["track_id"], first["bbox"]
        assert track_id is not None
        for i, frame in enumerate(frames[1:], start=1):
            mine = [o for o in frame["objects"] if o["track_id"] == track_id]
            assert mine, f"{name}: track {track_id} lost at frame {i}"
            assert iou(previous, mine[0]["bbox"]) > 0.5, f"{name}: track {track_id} jumped at {i}"
            assert mine[0]["category"] == "car"
            previous = mine[0]["bbox"]
