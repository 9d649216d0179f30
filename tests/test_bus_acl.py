"""Bus security on a password-protected server: per-RSU ACL users that can only append to
their own stream, issued through the API, and an RSU that cannot speak for another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from citybrain.bus_acl import with_credentials
from citybrain.config import CitybrainConfig
from citybrain.ingest import IngestWorker
from citybrain.state import TrafficState
from common.bus import BusConfig, StreamProducer, index_key, partition_of, stream_key
from common.redis_server import LocalRedisServer
from common.schemas import encode_message
from rsu.publisher import BusPublisher
from tests.conftest import api_client
from tests.test_ingest_exactly_once import make_frames

PASSWORD = "center-secret-1"


@pytest.fixture(scope="module")
def locked_server() -> Iterator[LocalRedisServer]:
    server = LocalRedisServer(password=PASSWORD).start()
    yield server
    server.stop()


def test_rsu_credentials_confine_an_rsu_to_its_own_stream(
    locked_server: LocalRedisServer, tmp_path: Path
) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=locked_server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.xadd(stream_key("bj-01", 8), {"m": b"x"})
    center_url = locked_server.url
    center = redis.Redis.from_url(center_url)
    center.flushall()
    config = CitybrainConfig.model_validate(
        {"bus": {"redis_url": center_url}, "history": {"url": f"sqlite:///{tmp_path}/h.db"}}
    )
    operator = api_client(config, "operator", center)
    viewer = api_client(config, "viewer", center)
    assert viewer.post("/rsus/bj-01/credentials").status_code == 403
    issued = operator.post("/rsus/bj-01/credentials")
    assert issued.status_code == 201
    body = issued.json()
    assert body["stream"] == stream_key("bj-01", 8) and body["username"] == "rsu.bj-01"
    rsu_url = with_credentials(center_url, f"{body['username']}:{body['password']}")

    # The RSU publishes through its own credentials; ingest (the center's) applies it.
    publisher = BusPublisher(BusConfig(redis_url=rsu_url))
    publisher.check()
    frames = make_frames("bj-01", 5, seed=1)
    publisher.send(frames)
    assert publisher.connected and publisher.spool_depth == 0
    rsu = redis.Redis.from_url(rsu_url)
    producer = StreamProducer(rsu, BusConfig())
    for forbidden in (
        lambda: producer.publish([("bj-02", b"x")]),  # another RSU's stream
        lambda: rsu.xrange(stream_key("bj-01", 8)),  # reading, even its own
        lambda: rsu.hgetall("cb:apikeys"),
        lambda: rsu.xadd(index_key(partition_of("bj-01", 8)), {"m": b"x"}),
        lambda: rsu.acl_setuser("rsu.bj-01", enabled=True, nopass=True),
    ):
        with pytest.raises(redis.ResponseError, match=r"(?i)no permissions|NOPERM"):
            forbidden()
    # Its own stream, but speaking for bj-02: dead-lettered, not applied.
    producer.publish([("bj-01", encode_message(make_frames("bj-02", 1, seed=2)[0]))])
    stats = IngestWorker(config, center).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered) == (5, 1)
    state = TrafficState(center, config)
    assert (
        state.cameras("bj-02") == {} and state.camera_states("bj-01")["cam0"]["frame"]["seq"] == 4
    )

    # Re-issuing or revoking cuts the old password off.
    assert operator.delete("/rsus/bj-01/credentials").status_code == 204
    assert operator.delete("/rsus/bj-01/credentials").status_code == 404
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(rsu_url).ping()
