"""Live sources on a real MJPEG network stream: newest frame only, reconnect after loss."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from common.datadir import resolve_asset
from rsu.source import LiveSource, SourceConfig
from tests.mjpeg_camera import MjpegCamera

CLIP = "video/intersection_beijing/intersection.mp4"


@pytest.fixture
def camera():
    cam = MjpegCamera(resolve_asset(CLIP)).start()
    yield cam
    cam.stop()


def wait_for(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_slow_consumer_gets_the_newest_frame_and_skips_are_counted(camera) -> None:
    source = LiveSource(SourceConfig(uri=camera.url))
    try:
        first = source.read(timeout_s=10)
        assert first is not None and first.image.shape == (540, 960, 3)
        taken = []
        for _ in range(5):
            time.sleep(0.3)  # a pipeline 10x slower than the camera
            frame = source.read(timeout_s=5)
            assert frame is not None
            taken.append(frame.index)
        # Each read is the newest frame: ~9 frames apart, never a backlog of old ones.
        gaps = [b - a for a, b in itertools.pairwise(taken)]
        assert all(g >= 5 for g in gaps), gaps
        # No queue: every frame read was taken (6 of them) or counted as skipped, but for
        # at most the newest one, waiting.
        assert source.frames_read - source.frames_skipped in (6, 7)
    finally:
        source.close()


def test_a_camera_that_disappears_is_reconnected(camera) -> None:
    source = LiveSource(
        SourceConfig(uri=camera.url, timeout_s=1.0, reconnect_initial_s=0.2, reconnect_max_s=1.0)
    )
    try:
        wait_for(lambda: source.connected and source.frames_read > 5)
        camera.stop()
        wait_for(lambda: not source.connected)
        assert source.last_error and camera.url in source.last_error
        camera.start()  # the same camera back on the same address
        wait_for(lambda: source.connected and source.reconnects >= 1)
        before = source.frames_read
        wait_for(lambda: source.frames_read > before + 5)
    finally:
        source.close()


def test_an_unreachable_camera_reports_why(tmp_path: Path) -> None:
    source = LiveSource(
        SourceConfig(uri="http://127.0.0.1:1/none.mjpg", timeout_s=0.5, reconnect_initial_s=0.1)
    )
    try:
        wait_for(lambda: source.last_error is not None, 10)
        assert (
            not source.connected and "cannot open http://127.0.0.1:1/none.mjpg" in source.last_error
        )
        assert source.read(timeout_s=0.2) is None
    finally:
        source.close()
