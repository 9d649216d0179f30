"""History through the ingest workers: exactly once under kill -9, on a real PostgreSQL."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import redis

from citybrain.history import open_history
from citybrain.ingest import IngestWorker
from citybrain.state import TrafficState
from common.schemas import LaneAggregates, LaneInterval, RoadUserClass
from tests.test_ingest_exactly_once import config_for, publish, worker_process

T0 = 1_700_000_000_000 // 300_000 * 300_000


def lane_messages(rsu_id: str, n: int, seed: int) -> list[LaneAggregates]:
    rng = random.Random(seed)

    def lane(lane_id: str) -> LaneInterval:
        counts = {RoadUserClass.car: rng.randint(0, 9), RoadUserClass.bus: rng.randint(0, 1)}
        return LaneInterval(
            lane_id=lane_id,
            counts=counts,
            occupancy=rng.random(),
            mean_speed_mps=rng.uniform(0, 20),
        )

    return [
        LaneAggregates(
            rsu_id=rsu_id,
            camera_id="cam0",
            run_id="run1",
            seq=i,
            interval_start_ms=T0 + i * 10_000,
            interval_s=10,
            observed_s=10,
            lanes=[lane("L1"), lane("L2")],
        )
        for i in range(n)
    ]


def test_two_workers_killed_and_restarted_write_each_interval_once(
    redis_url: str, redis_client: redis.Redis, postgres_url: str, tmp_path: Path, monkeypatch
) -> None:
    messages = lane_messages("rsu-h", 3000, seed=5) + lane_messages("rsu-i", 3000, seed=6)
    publish(redis_client, messages)  # type: ignore[arg-type]
    publish(redis_client, messages[:500])  # re-sent after a reconnect: duplicates
    monkeypatch.setenv("HISTORY_URL", postgres_url)
    config, path_a = config_for(redis_url, tmp_path, consumer="a")
    _, path_b = config_for(redis_url, tmp_path, consumer="b")
    assert config.history.url == postgres_url

    state = TrafficState(redis_client, config)
    for _ in range(3):  # two workers side by side, both killed mid-stream
        before = state.ingest_lag()["unread"]
        procs = [worker_process(path_a), worker_process(path_b)]
        deadline = time.monotonic() + 30
        while state.ingest_lag()["unread"] >= before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert state.ingest_lag()["unread"] > 0, "the kills must land before the end"
    time.sleep(0.4)  # past claim_idle_ms: worker "c" takes over what "a" and "b" left pending
    final, _ = config_for(redis_url, tmp_path, consumer="c")
    IngestWorker(final, redis.Redis.from_url(redis_url)).run(idle_exit_s=1.0)
    assert state.ingest_lag() == {"unread": 0, "pending": 0}

    history = open_history(postgres_url)
    for rsu_id in ("rsu-h", "rsu-i"):
        mine = [m for m in messages if m.rsu_id == rsu_id]
        for lane in ("L1", "L2"):
            bins = history.bins(rsu_id, 300, T0, T0 + 10**9, lane_id=lane)
            expected = sum(
                interval.counts.get(RoadUserClass.car, 0)
                + interval.counts.get(RoadUserClass.bus, 0)
                for m in mine
                for interval in m.lanes
                if interval.lane_id == lane
            )
            assert sum(b.vehicles for b in bins) == expected
            assert sum(b.observed_s for b in bins) == len(mine) * 10
            assert len(bins) == len(mine) * 10 // 300
    history.close()
