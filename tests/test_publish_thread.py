"""The sender thread: the camera loop never waits for the bus, and nothing is lost or
reordered through a server crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from common.bus import BusConfig
from common.redis_server import LocalRedisServer
from rsu.publish_thread import BackgroundPublisher
from rsu.publisher import BusPublisher, PublishError
from rsu.spool import Spool
from tests.test_spool import durable_server, health, stream_seqs


def test_send_returns_while_the_bus_is_stalled_and_everything_arrives_in_order(
    tmp_path: Path,
) -> None:
    server = LocalRedisServer().start()
    try:
        publisher = BackgroundPublisher(
            BusPublisher(BusConfig(redis_url=server.url), Spool(tmp_path / "s.sqlite", 1000))
        )
        publisher.send([health(0)])
        assert publisher.flush(5.0)
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")  # a bus that stalls writes
        start = time.monotonic()
        for seq in range(1, 51):
            publisher.send([health(seq)])
        handed_over = time.monotonic() - start
        assert handed_over < 0.5, f"send waited for the stalled bus ({handed_over:.2f} s)"
        assert publisher.flush(10.0)
        assert time.monotonic() - start >= 1.0  # ... while the writes themselves waited
        assert stream_seqs(server.url, "health") == list(range(51))
        assert len(publisher.ack_ms) == 51 and max(publisher.ack_ms) >= 1000
        publisher.close()
    finally:
        server.stop()


def test_spools_through_a_server_crash_and_resends_in_order(tmp_path: Path) -> None:
    server = durable_server(tmp_path)
    try:
        publisher = BackgroundPublisher(
            BusPublisher(
                BusConfig(redis_url=server.url),
                Spool(tmp_path / "spool.sqlite", 1000),
                retry_initial_s=0.05,
            )
        )
        for seq in range(10):
            publisher.send([health(seq)])
        assert publisher.flush(5.0)
        server.kill()
        for seq in range(10, 30):
            publisher.send([health(seq)])  # never raises: the thread spools
        deadline = time.monotonic() + 10
        while publisher.spool_depth < 20:
            assert time.monotonic() < deadline, publisher.spool_depth
            time.sleep(0.01)
        assert not publisher.connected
        server.start()
        assert publisher.flush(10.0)  # the thread retried on its own and drained the spool
        assert publisher.connected and publisher.reconnects == 1
        publisher.send([health(30)])
        assert publisher.flush(5.0)
        assert stream_seqs(server.url, "health") == list(range(31))
        publisher.close()
    finally:
        server.stop()


def test_without_a_spool_a_failure_reaches_the_camera_loop(tmp_path: Path) -> None:
    server = LocalRedisServer().start()
    publisher = BackgroundPublisher(
        BusPublisher(BusConfig(redis_url=server.url), retry_initial_s=0.05)
    )
    publisher.send([health(0)])
    assert publisher.flush(5.0)
    server.stop()
    publisher.send([health(1)])
    publisher.flush(5.0)
    with pytest.raises(PublishError, match="publishing to"):
        publisher.send([health(2)])
    publisher.close()
