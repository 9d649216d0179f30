"""RSU clocks that are wrong: set ahead (counted into the future), set back, or behind.

An RSU's clock is its own; the center notices it through the bus server's clock (the time
in every stream entry's id) and must neither be pinned to a clock that ran ahead nor keep
a silent camera's data live because it was stamped in the future.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from citybrain.config import CitybrainConfig, load_citybrain_config
from citybrain.ingest import IngestWorker
from citybrain.lane_state import rsu_lane_states
from citybrain.state import TrafficState
from common.bus import BusConfig, StreamProducer
from common.schemas import (
    FrameObjects,
    LaneAggregates,
    LaneInterval,
    PerceivedObject,
    RoadUserClass,
    encode_message,
)
from tests.conftest import api_client

HOURS_8_MS = 8 * 3_600_000  # a camera set to Beijing time but labelled UTC
STALE_S = 1.0


def config_for(url: str, tmp_path: Path, stale_s: float = STALE_S) -> CitybrainConfig:
    path = tmp_path / f"citybrain-{stale_s}.yaml"
    path.write_text(
        f"bus:\n  redis_url: {url}\n  partitions: 4\n"
        "ingest:\n  consumer: w1\n  block_ms: 100\n"
        f"state:\n  stale_after_s: {stale_s}\n"
        "history:\n  enabled: false\n"
    )
    return load_citybrain_config(str(path))


def frames(rsu_id: str, seqs: range, clock_ahead_ms: int) -> list[FrameObjects]:
    now = int(time.time() * 1000) + clock_ahead_ms
    car = PerceivedObject(
        category=RoadUserClass.car, confidence=0.9, bbox=(0, 0, 10, 10), lane_id="L1"
    )
    return [
        FrameObjects(
            rsu_id=rsu_id,
            camera_id="cam0",
            run_id="run1",
            seq=seq,
            captured_at_ms=now + i * 100,
            published_at_ms=now + i * 100 + 5,
            pipeline_ms=5.0,
            image_width=100,
            image_height=100,
            objects=[car],
        )
        for i, seq in enumerate(seqs)
    ]


def ingest(config: CitybrainConfig, client: redis.Redis, messages: list) -> None:
    producer = StreamProducer(client, BusConfig(partitions=4))
    producer.publish([(m.rsu_id, encode_message(m)) for m in messages])
    IngestWorker(config, redis.Redis.from_url(config.bus.redis_url)).run(idle_exit_s=0.3)


def test_a_clock_ahead_is_named_and_does_not_pin_the_state_once_set_right(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = config_for(redis_url, tmp_path)
    ingest(config, redis_client, [*frames("bj-ahead", range(5), HOURS_8_MS),
                                  *frames("bj-behind", range(5), -600_000),
                                  *frames("bj-right", range(5), 0)])  # fmt: skip
    # The API's own config: a camera is reported on while it is not stale, and with the
    # 1 s of the ingest config above, a slow test machine could make them stale already.
    api = api_client(config_for(redis_url, tmp_path, stale_s=60.0), "viewer", redis_client)
    health = api.get("/health").json()
    assert (health["clock_ahead_cameras"], health["clock_behind_cameras"]) == (1, 1)
    assert health["status"] == "degraded"
    ahead, behind = health["problems"]
    assert "bj-ahead/cam0 by +2880" in ahead and "future bins" in ahead
    assert "bj-behind/cam0 by -59" in behind and "spooled" in behind
    camera = api.get("/rsus/bj-ahead/state").json()["cameras"][0]
    assert abs(camera["clock_ahead_ms"] - HOURS_8_MS) < 5_000
    assert abs(api.get("/rsus/bj-right/state").json()["cameras"][0]["clock_ahead_ms"]) < 5_000
    metrics = api.get("/metrics").text
    assert "citybrain_clock_ahead_cameras 1.0" in metrics

    # The clock is set right: frames now stamped 8 h earlier than the stored state's.
    time.sleep(STALE_S + 0.2)
    ingest(config, redis_client, frames("bj-ahead", range(5, 10), 0))
    state = TrafficState(redis_client, config).camera_states("bj-ahead")["cam0"]
    assert state["frame"]["seq"] == 9  # not pinned to seq 4 for 8 hours
    assert abs(state["clock_ahead_ms"]) < 5_000
    assert api.get("/health").json()["clock_ahead_cameras"] == 0


def test_within_the_stale_limit_the_newest_stamp_still_wins(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Out-of-order delivery (two workers, a redelivery) must not roll the state back."""
    config = config_for(redis_url, tmp_path)
    config = config.model_copy(
        update={"state": config.state.model_copy(update={"stale_after_s": 600.0})}
    )
    ingest(config, redis_client, frames("bj-order", range(5, 10), 0))
    ingest(config, redis_client, frames("bj-order", range(5), -60_000))
    assert TrafficState(redis_client, config).camera_states("bj-order")["cam0"]["frame"]["seq"] == 9


def test_lanes_stamped_in_the_future_go_stale_when_the_camera_falls_silent(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = config_for(redis_url, tmp_path)
    start = int(time.time() * 1000) + HOURS_8_MS
    lanes = LaneAggregates(
        rsu_id="bj-lanes", camera_id="cam0", run_id="run1", seq=0, interval_start_ms=start,
        interval_s=1, observed_s=1,
        lanes=[LaneInterval(lane_id="L1", counts={RoadUserClass.car: 3}, queue_vehicles=2)],
    )  # fmt: skip
    ingest(config, redis_client, [lanes])
    state = TrafficState(redis_client, config)
    assert [lane.stale for lane in rsu_lane_states(state, "bj-lanes", 60, STALE_S)] == [False]
    time.sleep(STALE_S + lanes.interval_s + 0.2)  # silent since
    assert [lane.stale for lane in rsu_lane_states(state, "bj-lanes", 60, STALE_S)] == [True]


def test_a_silent_cameras_last_clock_reading_is_not_a_problem_any_more(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """It is counted as stale; its clock matters again when it reports again."""
    config = config_for(redis_url, tmp_path, stale_s=3.0)
    api = api_client(config, "viewer", redis_client)
    ingest(config, redis_client, frames("bj-gone", range(3), HOURS_8_MS))
    assert api.get("/health").json()["clock_ahead_cameras"] == 1
    time.sleep(3.2)
    health = api.get("/health").json()
    assert (health["clock_ahead_cameras"], health["stale_cameras"]) == (0, 1)
