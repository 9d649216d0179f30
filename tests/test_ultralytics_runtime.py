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


def test_the_fitted_onnx_computes_what_ultralytics_own_rectangular_export_does(
    tmp_path,
) -> None:
    """rsu.model_fit re-shapes the square export; Ultralytics exports the .pt at 320x192
    itself.  Same weights, same graph: the outputs must agree to the bit."""
    import onnxruntime as ort

    from rsu.export import export_ultralytics
    from rsu.model_fit import fit_file

    theirs = export_ultralytics(
        resolve_asset("models/yolov8n-coco.pt"), tmp_path, "onnx", (192, 320)
    )
    ours = fit_file(resolve_asset("models/yolov8n-coco-320.onnx"), tmp_path / "f.onnx", 192, 320)
    capture = cv2.VideoCapture(str(resolve_asset("video/intersection_beijing/intersection.mp4")))
    image = capture.read()[1]
    capture.release()
    blob = cv2.dnn.blobFromImage(
        cv2.copyMakeBorder(cv2.resize(image, (320, 180)), 6, 6, 0, 0, cv2.BORDER_CONSTANT,
                           value=(114, 114, 114)),
        1 / 255, swapRB=True,
    )  # fmt: skip
    cpu = ["CPUExecutionProvider"]
    a, b = (ort.InferenceSession(str(p), providers=cpu).run(None, {"images": blob})[0]
            for p in (ours, theirs))  # fmt: skip
    assert a.shape == b.shape == (1, 84, 1260)
    assert np.array_equal(a, b)
