"""No data lost: messages spool while the bus is down and are re-sent in order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis

from citybrain.config import CitybrainConfig
from citybrain.ingest import IngestWorker
from citybrain.state import TrafficState
from common.bus import BusConfig, discover_streams
from common.redis_server import LocalRedisServer
from common.schemas import RsuHealth, decode_message
from rsu.publisher import BusPublisher
from rsu.replay import run_replay
from rsu.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "replay_data" / "intersection_beijing.yaml"


def test_spool_is_fifo_bounded_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=5)
    spool.push([("r", b"1"), ("r", b"2"), ("r", b"3")])
    spool.push([("r", b"4"), ("r", b"5"), ("r", b"6"), ("r", b"7")])
    assert len(spool) == 5 and spool.dropped == 2  # the two oldest made room
    assert [p for _, _, p in spool.peek(10)] == [b"3", b"4", b"5", b"6", b"7"]
    first_two = spool.peek(2)
    spool.delete_through(first_two[-1][0])
    spool.close()
    reopened = Spool(path, max_messages=5)  # an RSU restart keeps what was spooled
    assert len(reopened) == 3
    assert [p for _, _, p in reopened.peek(10)] == [b"5", b"6", b"7"]


def health(seq: int) -> RsuHealth:
    return RsuHealth(
        rsu_id="r1", camera_id="c", run_id="x", seq=seq, sent_at_ms=seq, status="ok",
        source_connected=True, fps=1, frames_processed=seq, frames_skipped=0, budget_ms=20,
        budget_violations=0,
    )  # fmt: skip


def durable_server(tmp_path: Path) -> LocalRedisServer:
    # appendfsync always: a write the RSU saw acknowledged survives kill -9 of the server.
    return LocalRedisServer(
        data_dir=tmp_path / "redis", appendonly=True, extra_args=["--appendfsync", "always"]
    ).start()


def stream_seqs(url: str, kind: str) -> list[int]:
    client = redis.Redis.from_url(url)
    seqs = []
    for stream in discover_streams(client, 8):
        for _, fields in client.xrange(stream):
            msg = decode_message(fields[b"m"])
            if msg.kind == kind:
                seqs.append(msg.seq)
    client.close()
    return seqs


def test_publisher_spools_through_a_server_restart_and_resends_in_order(tmp_path: Path) -> None:
    server = durable_server(tmp_path)
    try:
        publisher = BusPublisher(
            BusConfig(redis_url=server.url),
            Spool(tmp_path / "spool.sqlite", 1000),
            retry_initial_s=0.05,
        )
        for seq in range(10):
            publisher.send([health(seq)])
        server.kill()
        for seq in range(10, 30):
            publisher.send([health(seq)])  # never raises: spooled
        assert not publisher.connected and publisher.spool_depth == 20
        server.start()
        time.sleep(0.1)
        publisher.send([health(30)])  # the next tick drains the spool first
        assert publisher.connected and publisher.spool_depth == 0 and publisher.reconnects == 1
        assert stream_seqs(server.url, "health") == list(range(31))
        publisher.close()
    finally:
        server.stop()


def test_replay_survives_a_redis_crash_and_every_frame_arrives_once(tmp_path: Path) -> None:
    server = durable_server(tmp_path)
    frames = 120
    try:
        overrides = {
            "bus": {"redis_url": server.url},
            "detector": {"model": "models/yolov8n-coco-320.onnx"},
            "spool": {"path": str(tmp_path / "rsu-spool.sqlite"), "retry_initial_s": 0.05},
        }
        result: dict[str, object] = {}
        replay = threading.Thread(
            target=lambda: result.update(
                summary=run_replay(SCENE, overrides=overrides, max_frames=frames, progress=False)
            )
        )
        replay.start()
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 60
        while sum(client.xlen(s) for s in discover_streams(client, 8)) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.kill()  # mid-replay, as a crash
        time.sleep(0.5)  # frames keep coming; they spool
        server.start()
        replay.join(timeout=120)
        summary = result["summary"]
        assert summary.frames == frames  # type: ignore[attr-defined]
        assert summary.reconnects >= 1 and summary.still_spooled == 0  # type: ignore[attr-defined]

        seqs = stream_seqs(server.url, "frame")
        assert sorted(set(seqs)) == list(range(frames))  # every frame reached the bus
        config = CitybrainConfig.model_validate({"bus": {"redis_url": server.url}})
        IngestWorker(config, redis.Redis.from_url(server.url)).run(idle_exit_s=0.5)
        rsu_id = summary.rsu_id  # type: ignore[attr-defined]
        now_ms = int(time.time() * 1000)
        bins = TrafficState(client, config).counts(
            rsu_id, now_ms - 3_600_000, now_ms + 60_000, 10, lane_id="*"
        )
        assert sum(b.frames for b in bins) == frames  # ... and is counted exactly once
        client.close()
    finally:
        server.stop()
