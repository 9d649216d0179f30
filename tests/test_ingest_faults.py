"""Ingest faults: the Redis server killed and restarted (AOF on) mid-ingest, and one RSU
flooding the bus. Nothing lost, nothing counted twice, the API keeps answering."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis

from citybrain.config import CitybrainConfig
from citybrain.ingest import IngestWorker
from citybrain.state import TrafficState
from common.bus import MIN_PER_STREAM, StreamProducer, stream_key
from common.redis_server import LocalRedisServer
from common.schemas import encode_message
from tests.conftest import api_client
from tests.test_ingest_exactly_once import expected_totals, make_frames, measured_totals


def config_for(url: str, tmp_path: Path, **bus: object) -> CitybrainConfig:
    return CitybrainConfig.model_validate(
        {
            "bus": {"redis_url": url, "partitions": 4, **bus},
            "ingest": {"batch": 20, "block_ms": 50, "claim_idle_ms": 300, "claim_interval_s": 0.2},
            "history": {"url": f"sqlite:///{tmp_path}/h.db"},
        }
    )


def test_server_killed_and_restarted_mid_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    server = LocalRedisServer(
        data_dir=tmp_path / "redis", appendonly=True, extra_args=["--appendfsync", "always"]
    ).start()
    try:
        config = config_for(server.url, tmp_path)
        client = redis.Redis.from_url(server.url)
        frames = make_frames("rsu-k", 3000, seed=11) + make_frames("rsu-l", 2000, seed=12)
        producer = StreamProducer(client, config.bus)
        for i in range(0, len(frames), 200):
            producer.publish([(f.rsu_id, encode_message(f)) for f in frames[i : i + 200]])
        api = api_client(config, "viewer", client)

        worker = IngestWorker(config, redis.Redis.from_url(server.url, socket_timeout=2))
        thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": 3.0})
        thread.start()
        state = TrafficState(client, config)
        while state.ingest_lag()["unread"] > 4000:
            time.sleep(0.005)
        server.kill()  # SIGKILL mid-ingest
        assert api.get("/rsus").status_code == 503  # answers, saying the store is down
        assert api.get("/health").json()["status"] == "down"
        time.sleep(0.5)
        server.start()  # same port and data directory: the AOF brings everything back
        thread.join(timeout=120)
        assert not thread.is_alive()

        client = redis.Redis.from_url(server.url)
        state = TrafficState(client, config)
        assert state.ingest_lag() == {"unread": 0, "pending": 0}
        assert worker.stats.redis_failures >= 1  # it saw the outage, and rode it out
        assert measured_totals(client, config, ["rsu-k", "rsu-l"]) == expected_totals(frames)
        assert api.get("/health").json()["status"] == "ok"
    finally:
        server.stop()


def test_a_flooding_rsu_neither_starves_others_nor_hides_its_loss(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = config_for(redis_url, tmp_path, maxlen=500)
    producer = StreamProducer(redis_client, config.bus)
    flood = make_frames("flood", 5000, seed=1)
    quiet = {rsu: make_frames(rsu, 60, seed=i) for i, rsu in enumerate(["q-1", "q-2", "q-3"])}
    for i in range(0, 5000, 500):
        producer.publish([("flood", encode_message(f)) for f in flood[i : i + 500]])
    for rsu, frames in quiet.items():
        producer.publish([(rsu, encode_message(f)) for f in frames])
    redis_client.xtrim(stream_key("flood", 4), maxlen=500, approximate=False)

    worker = IngestWorker(config, redis.Redis.from_url(redis_url))
    worker.consumer.ensure_groups()
    for _ in range(3):  # each read takes the same share from every stream: no starvation
        worker.step()
    state = TrafficState(redis_client, config)
    share = max(MIN_PER_STREAM, config.ingest.batch // 4)
    assert all(state.camera_states(rsu)["cam0"]["frame"]["seq"] == 3 * share - 1 for rsu in quiet)
    worker.run(idle_exit_s=0.5)

    expected = expected_totals([f for frames in quiet.values() for f in frames])
    assert measured_totals(redis_client, config, list(quiet)) == expected
    # The flood's oldest 4500 messages were trimmed before ingest read them: counted, and
    # /health says so; nothing of the others was lost.
    health = api_client(config, "viewer", redis_client).get("/health").json()
    assert health["lost_entries"] == 4500
    assert health["status"] == "degraded" and "trimmed" in health["problems"][0]
