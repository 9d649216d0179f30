"""The ultralytics runtime plugin agrees with the ONNX Runtime one on the real clip.

Runs where the models extra (Ultralytics, PyTorch) is installed, as `make bench` installs it;
`make test` does not install PyTorch, so there this module is skipped, saying why.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="needs the models extra (make bench installs it)")

from common.datadir import resolve_asset
from rsu.detector import DetectorConfig, build_detector
from rsu.tracker import iou_matrix


def test_pt_and_onnx_runtimes_find_the_same_road_users() -> None:
    frame = cv2.VideoCapture(str(resolve_asset("video/intersection_beijing/intersection.mp4")))
    image = frame.read()[1]
    onnx = build_detector(DetectorConfig(imgsz=640), resolve_asset("models/yolov8n-coco-640.onnx"))
    pt = build_detector(
        DetectorConfig(runtime="ultralytics", imgsz=640), resolve_asset("models/yolov8n-coco.pt")
    )
    a, b = onnx.detect(image), pt.detect(image)
    assert len(a) >= 25
    iou = iou_matrix(a.xyxy.astype(np.float64), b.xyxy.astype(np.float64))
    iou[a.class_name[:, None] != b.class_name[None, :]] = 0
    # Ultralytics letterboxes to a stride-aligned rectangle, not a square: boxes agree to
    # IoU ~0.99, and scores differ a little, so a box or two at the threshold may differ.
    matched = (iou.max(axis=1) >= 0.85).sum()
    assert matched >= 0.85 * len(a) and abs(len(a) - len(b)) <= 3
    assert pt.warmup() > 0
