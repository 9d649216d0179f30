"""The command lines as a user runs them: output format and clear errors for bad input."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
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
    assert figures["input"] == "320x192"  # the square model runs at the 960x540 clip's aspect
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


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it only waits to be reaped by its (possibly gone) parent.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def _still_alive_after(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still running once they had ``seconds`` to exit."""
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_demo_stops_every_process_it_started_on_sigterm() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "citybrain.cli", "demo", "--max-frames", "5", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("Serving until Ctrl-C"):
                break
        children = _children(demo.pid)
        assert len(children) == 3  # server, ingest, API
        demo.terminate()
        assert demo.wait(timeout=30) == 0
        assert _still_alive_after(children, 10.0) == []
    finally:
        if demo.poll() is None:
            demo.kill()


def test_realtime_replay_is_paced_at_the_clip_frame_rate(redis_url: str) -> None:
    model = "models/yolov8n-coco-320.onnx"
    out = run("rsu.cli", "replay", "--scene", SCENE, "--max-frames", "15", "--realtime",
              "--json", "--redis-url", redis_url, "--model", model)  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    # 15 frames of a 30 fps clip span 14/30 s of media time; paced, they cannot go faster.
    assert figures["fps"] <= 15 / (14 / 30) * 1.001


def test_scene_without_a_subcommand_is_a_usage_error() -> None:
    out = run("rsu.cli", "scene")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "required: scene_command" in out.stderr or "choose from" in out.stderr


def test_a_clip_damaged_in_the_middle_is_replayed_past_the_damage(
    tmp_path: Path, redis_url: str
) -> None:
    from common.datadir import resolve_asset

    clip = tmp_path / "damaged.mp4"
    data = bytearray(resolve_asset("video/intersection_beijing/intersection.mp4").read_bytes())
    middle = len(data) // 2
    # 20 kB of the middle of the file overwritten (fixed bytes: the same damage every run).
    data[middle : middle + 20_000] = random.Random(0).randbytes(20_000)
    clip.write_bytes(bytes(data))
    out = run("rsu.cli", "replay", "--scene", SCENE, "--video", str(clip), "--json",
              "--redis-url", redis_url, "--model", "models/yolov8n-coco-320.onnx")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    # The frames after the damage are replayed too: only the damaged ones are missing.
    assert figures["frames_skipped"] >= 1
    assert figures["frames"] + figures["frames_skipped"] == 252
    assert figures["frames"] >= 240


def test_replay_writes_an_annotated_video(tmp_path: Path, redis_url: str) -> None:
    import cv2

    video = tmp_path / "annotated.mp4"
    out = run("rsu.cli", "replay", "--scene", SCENE, "--max-frames", "20", "--no-progress",
              "--annotate", str(video), "--redis-url", redis_url,
              "--model", "models/yolov8n-coco-320.onnx")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    capture = cv2.VideoCapture(str(video))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 20
    ok, first = capture.read()
    assert ok and first.shape == (540, 960, 3)
    # The stop line is drawn in red where the road is grey.
    b, g, r = (int(v) for v in first[378, 370])
    assert r > 150 and g < 100 and b < 100


def test_an_unwritable_annotation_path_is_a_clear_error(redis_url: str) -> None:
    out = run("rsu.cli", "replay", "--scene", SCENE, "--max-frames", "2", "--no-progress",
              "--annotate", "/proc/nope/out.mp4", "--redis-url", redis_url)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "/proc/nope" in out.stderr


def test_replay_writes_an_html_report(tmp_path: Path, redis_url: str) -> None:
    import re

    report = tmp_path / "report.html"
    out = run("rsu.cli", "replay", "--scene", SCENE, "--max-frames", "60", "--no-progress",
              "--report", str(report), "--redis-url", redis_url,
              "--model", "models/yolov8n-coco-320.onnx")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    series = {
        name: points for points, name in re.findall(r'points="([^"]*)"><title>(\w+)</title>', page)
    }
    assert "car" in series
    assert len(series["car"].split()) == 2  # 60 frames at 30 fps: seconds 0 and 1
    assert "<td>frames</td>" not in page and "<th>frames</th><td>60</td>" in page


def test_twin_stops_its_embedded_server_on_sigterm() -> None:
    """``citybrain sim twin`` without --redis-url starts its own server; stopped by a
    service manager (SIGTERM), it must not leave that server running."""
    from common.datadir import resolve_asset

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    scenario = resolve_asset("sumo/resco/ingolstadt1")
    twin = subprocess.Popen(
        [sys.executable, "-m", "citybrain.cli", "sim", "twin", "--scenario", str(scenario)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not servers and time.monotonic() < deadline:
            servers = [
                c for c in _children(twin.pid)
                if "valkey" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
            ]  # fmt: skip
            time.sleep(0.2)
        assert servers, "the twin started no embedded server"
        time.sleep(1.0)  # into the run
        twin.terminate()
        twin.wait(timeout=60)
        assert _still_alive_after(servers, 10.0) == []
    finally:
        if twin.poll() is None:
            twin.kill()
        for server in servers:  # a failed run must not leave one behind either
            if _alive(server):
                os.kill(server, signal.SIGKILL)


def test_an_ingest_worker_started_with_exit_with_parent_stops_when_its_parent_is_killed(
    redis_url: str,
) -> None:
    """The digital twin starts its ingest worker so; killed with SIGKILL, the twin cannot
    stop it, and it used to run on, orphaned, retrying a server that was gone."""
    import signal
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "child = subprocess.Popen([sys.executable, '-m', 'citybrain.cli', 'ingest', "
         f"'--redis-url', '{redis_url}', '--exit-with-parent'])\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(120)\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(3)  # the worker is up and reading
    os.kill(child, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return  # gone (reaped by init once it exited)
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the orphaned ingest worker was still running 15 s after its parent")
