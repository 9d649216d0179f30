"""The same bus, ingest, state and API on a local 3-master Redis Cluster (one binary)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from citybrain.bus_acl import with_credentials
from citybrain.config import CitybrainConfig
from citybrain.ingest import IngestWorker
from citybrain.state import TrafficState
from common.bus import BusConfig, StreamProducer, connect, discover_streams
from common.redis_server import LocalRedisCluster
from common.schemas import encode_message
from rsu.publisher import BusPublisher
from tests.conftest import api_client
from tests.test_ingest_exactly_once import expected_totals, make_frames, measured_totals

RSUS = [f"rsu-{i}" for i in range(12)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(masters=3) as running:
        yield running


def test_bus_ingest_state_and_api_work_unchanged_on_a_cluster(
    cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    config = CitybrainConfig.model_validate(
        {
            "bus": {"redis_url": cluster.url, "cluster": True, "partitions": 8},
            "ingest": {"batch": 50, "block_ms": 50, "claim_idle_ms": 200, "claim_interval_s": 0.1},
            "history": {"url": f"sqlite:///{tmp_path}/h.db"},
        }
    )
    client = connect(config.bus.redis_url, cluster=True)
    assert isinstance(client, redis.RedisCluster)
    frames = [f for i, rsu in enumerate(RSUS) for f in make_frames(rsu, 150, seed=i)]
    producer = StreamProducer(client, config.bus)
    for i in range(0, len(frames), 100):
        producer.publish([(f.rsu_id, encode_message(f)) for f in frames[i : i + 100]])
    producer.publish([(f.rsu_id, encode_message(f)) for f in frames[:300]])  # re-sent
    streams = discover_streams(client, 8)
    assert len(streams) == len(RSUS)
    # The RSUs' streams really are spread over the three masters.
    nodes = {client.get_node_from_key(s).name for s in streams}
    assert len(nodes) == 3

    # A first worker dies with a batch read but not acked; a second one takes it over.
    dying = IngestWorker(config, connect(config.bus.redis_url, cluster=True))
    dying.consumer.ensure_groups()
    assert dying.consumer.read()
    stats = IngestWorker(
        config.model_copy(update={"ingest": config.ingest.model_copy(update={"consumer": "b"})}),
        connect(config.bus.redis_url, cluster=True),
    ).run(idle_exit_s=1.0)
    assert stats.duplicates == 300 and stats.dead_lettered == 0
    state = TrafficState(client, config)
    assert state.ingest_lag() == {"unread": 0, "pending": 0}
    assert measured_totals(client, config, RSUS) == expected_totals(frames)

    api = api_client(config, "operator", client)
    assert api.get("/health").json()["status"] == "ok"
    assert api.get("/rsus").json()["total"] == len(RSUS)
    assert api.get("/rsus/rsu-3/state").json()["cameras"][0]["frame"]["seq"] == 149

    # Bus credentials are set on every master; the RSU publishes through the cluster.
    issued = api.post("/rsus/rsu-new/credentials").json()
    url = with_credentials(cluster.url, f"{issued['username']}:{issued['password']}")
    bus = BusConfig(redis_url=url, cluster=True, partitions=8)
    publisher = BusPublisher(bus)
    publisher.send(make_frames("rsu-new", 3, seed=99))
    assert publisher.connected and publisher.spool_depth == 0
    IngestWorker(config, connect(config.bus.redis_url, cluster=True)).run(idle_exit_s=0.5)
    assert state.camera_states("rsu-new")["cam0"]["frame"]["seq"] == 2


def test_dead_letters_are_read_and_resent_on_a_cluster(
    cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    """The resend script touches the dead letters, the RSU's stream, the index and a counter:
    one partition's keys, so one slot."""
    from citybrain.dead_letters import DeadLetters

    config = CitybrainConfig.model_validate(
        {
            "bus": {"redis_url": cluster.url, "cluster": True, "partitions": 8},
            "ingest": {"consumer": "dl", "block_ms": 50},
            "history": {"enabled": False},
        }
    )
    client = connect(config.bus.redis_url, cluster=True)
    StreamProducer(client, config.bus).publish([("rsu-dl-1", b"junk"), ("rsu-dl-2", b"[]")])
    worker = IngestWorker(config, connect(config.bus.redis_url, cluster=True))
    assert worker.run(idle_exit_s=0.3).dead_lettered == 2
    letters = DeadLetters(client, 8)
    found = letters.scan(rsu_id="rsu-dl-1")
    assert [d.payload for d in found.items] == [b"junk"] and letters.count() >= 2
    assert letters.resend(found.items[0])
    assert letters.scan(rsu_id="rsu-dl-1").items == [] and letters.trimmed() == 0
    worker = IngestWorker(config, connect(config.bus.redis_url, cluster=True))
    assert worker.run(idle_exit_s=0.3).dead_lettered == 1  # still junk: set aside again
    assert [d.payload for d in letters.scan(rsu_id="rsu-dl-1").items] == [b"junk"]
