"""`rsu check` on real parts: the clip as the camera, the real model, a real Valkey."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from citybrain.bus_acl import issue_rsu_credentials, with_credentials
from citybrain.config import CitybrainConfig
from citybrain.ingest import IngestWorker
from citybrain.state import TrafficState
from common.datadir import resolve_asset
from common.redis_server import LocalRedisServer
from rsu import cli

ROOT = Path(__file__).resolve().parent.parent
CLIP = "video/intersection_beijing/intersection.mp4"


def camera_config(tmp_path: Path, rsu_id: str = "bj-check-01", scene: str = "") -> Path:
    path = tmp_path / f"{rsu_id}.yaml"
    path.write_text(
        f"rsu_id: {rsu_id}\n"
        f"scene: {scene or ROOT / 'replay_data/intersection_beijing.yaml'}\n"
        f"source:\n  uri: {resolve_asset(CLIP)}\n"
        "detector:\n  model: models/yolov8n-coco-320.onnx\n  imgsz: 320\n"
        # The model check weighs inference time against the budget: generous here, so a
        # busy test machine does not turn it into a warning.
        "budget_ms: 1000\n"
    )
    return path


def check(path: Path, url: str, capsys: pytest.CaptureFixture) -> tuple[int, dict]:
    code = cli.main(["check", "--config", str(path), "--redis-url", url, "--json"])
    checks = orjson.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in checks}


def test_a_ready_rsu_passes_and_the_center_hears_it(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, checks = check(camera_config(tmp_path), redis_url, capsys)
    assert code == 0, checks
    assert [c["verdict"] for c in checks.values()] == ["ok"] * 5
    assert "960x540" in checks["camera"]["detail"] and "road users" in checks["camera"]["detail"]
    config = CitybrainConfig.model_validate(
        {"bus": {"redis_url": redis_url}, "history": {"enabled": False}}
    )
    IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    health = TrafficState(redis.Redis.from_url(redis_url), config).camera_states("bj-check-01")
    assert "rsu check" in health["cam0"]["health"]["detail"]


def test_a_scene_drawn_on_another_resolution_fails_the_camera(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    parking = ROOT / "replay_data/parking_lane.yaml"  # drawn on 768x432 frames
    code, checks = check(camera_config(tmp_path, scene=str(parking)), redis_url, capsys)
    assert code == 1
    camera = checks["camera"]
    assert camera["verdict"] == "fail"
    assert "960x540, but the scene was drawn on 768x432" in camera["detail"]


def test_credentials_of_another_rsu_and_a_missing_bus_fail_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with LocalRedisServer(password="center-secret") as server:
        center = redis.Redis.from_url(server.url)
        theirs = issue_rsu_credentials(center, "bj-other", 8)
        code, checks = check(camera_config(tmp_path), with_credentials(server.url, theirs), capsys)
        assert code == 1 and checks["bus"]["verdict"] == "fail"
        assert "credentials issued for 'bj-check-01'" in checks["bus"]["detail"]
        assert theirs.split(":", 1)[1] not in checks["bus"]["detail"]  # no password shown
        mine = issue_rsu_credentials(center, "bj-check-01", 8)
        code, checks = check(camera_config(tmp_path), with_credentials(server.url, mine), capsys)
        assert code == 0 and checks["clock"]["verdict"] == "ok"  # its ACL allows TIME
        port = server.port
    code, checks = check(camera_config(tmp_path), f"redis://127.0.0.1:{port}/0", capsys)
    assert code == 1 and "unreachable" in checks["bus"]["detail"]
    assert checks["clock"]["verdict"] == "skipped"
