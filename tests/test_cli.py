"""The command lines as a user runs them: output format and clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
SCENE = "replay_data/intersection_beijing.yaml"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_replay_json_ends_with_one_json_line(redis_url: str) -> None:
    out = run("rsu.cli", "replay", "--scene", SCENE, "--max-frames", "3", "--json",
              "--redis-url", redis_url, "--model", "models/yolov8n-coco-320.onnx")  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert figures["frames"] == 3 and figures["imgsz"] == 320
    assert {"detections", "pipeline_p50_ms", "pipeline_p99_ms", "budget_violations"} <= set(figures)


def test_replay_prints_a_human_summary(redis_url: str) -> None:
    out = run("rsu.cli", "replay", "--scene", SCENE, "--max-frames", "2", "--no-progress",
              "--redis-url", redis_url)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "replayed intersection_beijing: 2 frames" in out.stdout
    assert "detections per class:" in out.stdout and "p99" in out.stdout


def test_missing_scene_file() -> None:
    out = run("rsu.cli", "replay", "--scene", "replay_data/nope.yaml")
    assert out.returncode == 2
    assert "config file not found: replay_data/nope.yaml" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_model_names_where_it_looked(redis_url: str) -> None:
    out = run("rsu.cli", "replay", "--scene", SCENE, "--model", "models/missing.onnx",
              "--redis-url", redis_url)  # fmt: skip
    assert out.returncode == 2
    assert "'models/missing.onnx' not found in any data directory" in out.stderr
    assert "V2X_DATA_DIR" in out.stderr


def test_corrupt_video_file(tmp_path: Path, redis_url: str) -> None:
    clip = tmp_path / "corrupt.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    out = run("rsu.cli", "replay", "--scene", SCENE, "--video", str(clip),
              "--redis-url", redis_url)  # fmt: skip
    assert out.returncode == 2
    assert "corrupt.mp4" in out.stderr and ("cannot open video" in out.stderr
                                             or "cannot decode" in out.stderr)  # fmt: skip


def test_unreachable_redis() -> None:
    out = run("rsu.cli", "replay", "--scene", SCENE, "--redis-url", "redis://127.0.0.1:1/0",
              "--max-frames", "1")  # fmt: skip
    assert out.returncode == 2
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr


def test_invalid_scene_names_the_field(tmp_path: Path) -> None:
    scene = tmp_path / "scene.yaml"
    scene.write_text("name: x\nvideo: v.mp4\nlanes:\n  - id: L1\n    polygon: [[0, 0], [1, 1]]\n")
    out = run("rsu.cli", "replay", "--scene", str(scene))
    assert out.returncode == 2
    assert "lanes.0.polygon" in out.stderr and "at least 3" in out.stderr


def test_demo_runs_end_to_end_on_the_embedded_server() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "demo", "--exit", "--max-frames", "30",
         "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "started valkey-server on redis://127.0.0.1:" in out.stdout
    assert "API: http://127.0.0.1:" in out.stdout
    assert "RSUs reporting: 1" in out.stdout
    assert "ingest: 0 unread, 0 pending, 0 dead letters" in out.stdout
    assert "30 frames at" in out.stdout
