"""Acceptance: `rsu run` on a live network camera that drops out and comes back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from common.bus import discover_streams
from common.datadir import resolve_asset
from common.redis_server import free_port
from tests.mjpeg_camera import MjpegCamera

ROOT = Path(__file__).resolve().parent.parent


def messages(client: redis.Redis) -> list[dict]:
    return [orjson.loads(f[b"m"]) for s in discover_streams(client, 8) for _, f in client.xrange(s)]


def wait_for(condition, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_live_rsu_reports_a_lost_camera_keeps_running_and_recovers(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    camera = MjpegCamera(resolve_asset("video/intersection_beijing/intersection.mp4")).start()
    metrics_port = free_port()
    config = tmp_path / "rsu.yaml"
    config.write_text(
        f"""
rsu_id: live-01
camera_id: cam0
scene: {ROOT / "replay_data/intersection_beijing.yaml"}
source:
  uri: {camera.url}
  timeout_s: 1.0
  reconnect_initial_s: 0.2
  reconnect_max_s: 1.0
detector:
  model: models/yolov8n-coco-320.onnx
bus:
  redis_url: {redis_url}
spool:
  path: {tmp_path / "spool.sqlite"}
metrics:
  port: {metrics_port}
health_interval_s: 0.5
"""
    )
    rsu = subprocess.Popen(
        [sys.executable, "-m", "rsu.cli", "run", "--config", str(config)],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def frames() -> list[dict]:
            return [m for m in messages(redis_client) if m["kind"] == "frame"]

        wait_for(lambda: len(frames()) >= 10, what="10 frames")
        assert rsu.poll() is None
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("rsu_frames_processed_total", ())] >= 10
        assert samples[("rsu_stage_latency_seconds_count", (("stage", "inference"),))] >= 10
        assert samples[("rsu_source_connected", ())] == 1.0
        assert samples[("rsu_frame_age_seconds_count", ())] >= 10
        # every frame's messages went through the sender thread and were acknowledged
        assert samples[("rsu_bus_ack_seconds_count", ())] >= 10
        assert samples[("rsu_bus_queue_waits", ())] == 0

        camera.stop()  # the camera drops off the network

        def lost_reports() -> list[dict]:
            return [
                m for m in messages(redis_client)
                if m["kind"] == "health" and not m["source_connected"]
            ]  # fmt: skip

        wait_for(lambda: len(lost_reports()) >= 2, what="health reporting the lost camera")
        report = lost_reports()[-1]
        assert report["status"] == "degraded" and camera.url in report["detail"]
        assert rsu.poll() is None, "the RSU must keep running without its camera"

        seen = len(frames())
        camera.start()  # back on the same address
        wait_for(lambda: len(frames()) >= seen + 10, what="frames after the camera returned")
        recovered = [m for m in messages(redis_client) if m["kind"] == "health"][-1]
        assert recovered["source_connected"] and recovered["frames_skipped"] >= 0

        rsu.send_signal(signal.SIGTERM)
        assert rsu.wait(timeout=30) == 0
        final = [m for m in messages(redis_client) if m["kind"] == "health"][-1]
        assert final["status"] == "down" and final["detail"] == "stopped"
    finally:
        if rsu.poll() is None:
            rsu.kill()
        camera.stop()
