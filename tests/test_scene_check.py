from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.datadir import resolve_asset
from rsu.replay import load_scene
from rsu.scene import SceneConfig
from rsu.scene_check import check_scene, run_scene_check

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_scene_renders_over_its_first_frame(tmp_path: Path) -> None:
    scene = load_scene(ROOT / "replay_data" / "intersection_beijing.yaml")
    report = run_scene_check(scene, tmp_path / "scene.png")
    assert report.warnings == []
    image = cv2.imread(str(tmp_path / "scene.png"))
    assert image.shape == (540, 960, 3)
    original = cv2.VideoCapture(str(resolve_asset(scene.video)))
    ok, frame = original.read()
    assert ok
    # Lanes are tinted: pixels inside a lane changed, a pixel far from every lane did not.
    assert np.abs(image[460, 300].astype(int) - frame[460, 300].astype(int)).sum() > 30
    assert np.abs(image[100, 100].astype(int) - frame[100, 100].astype(int)).sum() < 10


def test_warnings_for_lanes_off_frame_overlapping_and_wrong_size() -> None:
    scene = SceneConfig.model_validate(
        {
            "name": "s",
            "image_size": [640, 480],
            "lanes": [
                {"id": "A", "polygon": [[0, 0], [50, 0], [50, 50], [0, 50]]},
                {"id": "B", "polygon": [[25, 0], [75, 0], [75, 50], [25, 50]]},
                {"id": "C", "polygon": [[80, 80], [120, 80], [120, 120], [80, 120]]},
            ],
        }
    )
    report, canvas = check_scene(scene, np.zeros((100, 100, 3), np.uint8))
    assert canvas.shape == (100, 100, 3)
    assert "image_size [640, 480] does not match the frame (100x100)" in report.warnings
    assert "lanes A and B overlap (1250 px²)" in report.warnings
    assert "lane C: 75% outside the frame" in report.warnings
