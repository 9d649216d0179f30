"""The OpenVINO runtime plugin runs the same ONNX export as ONNX Runtime on the real clip.

fp32 must give the same boxes (it is the same arithmetic, reordered); bf16 is allowed to move
scores a little, so it must keep nearly all of fp32's boxes, not all of them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from common.datadir import resolve_asset
from rsu.detector import DetectorConfig, ModelError, build_detector
from rsu.tracker import iou_matrix

MODEL = "models/yolov8n-coco-320.onnx"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(resolve_asset("video/intersection_beijing/intersection.mp4")))
    images = [capture.read()[1] for _ in range(60)]
    capture.release()
    return images[::6]


def matched_share(reference, candidate) -> float:
    iou = iou_matrix(reference.xyxy.astype(np.float64), candidate.xyxy.astype(np.float64))
    iou[reference.class_name[:, None] != candidate.class_name[None, :]] = 0
    return float((iou.max(axis=1) >= 0.9).mean())


def test_openvino_fp32_gives_onnxruntimes_boxes(frames: list[np.ndarray]) -> None:
    ort = build_detector(DetectorConfig(), resolve_asset(MODEL))
    ov = build_detector(DetectorConfig(runtime="openvino"), resolve_asset(MODEL))
    assert ov.imgsz == 320
    for image in frames:
        a, b = ort.detect(image), ov.detect(image)
        assert len(a) == len(b) and len(a) >= 5
        assert np.abs(a.xyxy - b.xyxy).max() < 0.5
        assert np.abs(a.confidence - b.confidence).max() < 1e-3
        assert list(a.class_name) == list(b.class_name)


def test_openvino_bf16_keeps_nearly_all_fp32_boxes(frames: list[np.ndarray]) -> None:
    fp32 = build_detector(DetectorConfig(runtime="openvino"), resolve_asset(MODEL))
    bf16 = build_detector(
        DetectorConfig(runtime="openvino", openvino_precision="bf16"), resolve_asset(MODEL)
    )
    shares = [matched_share(fp32.detect(f), bf16.detect(f)) for f in frames]
    assert np.mean(shares) >= 0.9


def test_openvino_errors_name_the_cause(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fixed input of 320x320"):
        build_detector(DetectorConfig(runtime="openvino", imgsz=640), resolve_asset(MODEL))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"cannot load .*broken\.onnx into OpenVINO"):
        build_detector(DetectorConfig(runtime="openvino"), broken)


def test_openvino_runs_the_model_fitted_to_the_frame_as_onnxruntime_does(
    frames: list[np.ndarray],
) -> None:
    wide = (frames[0].shape[1], frames[0].shape[0])
    ort = build_detector(DetectorConfig(), resolve_asset(MODEL), frame_size=wide)
    ov = build_detector(DetectorConfig(runtime="openvino"), resolve_asset(MODEL), frame_size=wide)
    assert ort.input_hw == ov.input_hw == (192, 320)
    for image in frames:
        a, b = ort.detect(image), ov.detect(image)
        assert len(a) == len(b) and len(a) >= 5
        assert np.abs(a.xyxy - b.xyxy).max() < 0.5
        assert list(a.class_name) == list(b.class_name)
