"""A square detection export re-shaped to the camera's aspect: sizes, the constants it
rewrites, detections on real frames, and the models it must refuse."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from common.datadir import resolve_asset
from rsu.detector import DetectorConfig, build_detector
from rsu.evaluation import kept_share
from rsu.model_fit import (
    ModelFitError,
    anchor_grid,
    cached_fit,
    fit_detection_onnx,
    fit_file,
    fitted_input,
    square_input,
)

MODEL = "models/yolov8n-coco-320.onnx"
CLIP = "video/intersection_beijing/intersection.mp4"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(resolve_asset(CLIP)))
    out = []
    for index in range(240):
        ok, image = capture.read()
        if not ok:
            break
        if index % 6 == 0:
            out.append(image)
    capture.release()
    return out


@pytest.mark.parametrize(
    ("imgsz", "frame", "expected"),
    [
        (320, (960, 540), (192, 320)),  # 16:9: 180 rows padded to 192, not 320
        (640, (960, 540), (384, 640)),
        (320, (640, 480), (256, 320)),  # 4:3
        (320, (540, 960), (320, 192)),  # portrait
        (320, (1280, 1280), (320, 320)),
        (320, (3000, 100), (32, 320)),  # never below one stride
    ],
)
def test_the_input_is_the_frame_scaled_to_imgsz_and_padded_to_the_stride(
    imgsz: int, frame: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert fitted_input(imgsz, *frame) == expected


def test_sizes_that_cannot_be_fitted_are_named() -> None:
    with pytest.raises(ModelFitError, match="multiple of the stride"):
        fitted_input(300, 960, 540)
    with pytest.raises(ModelFitError, match="not positive"):
        fitted_input(320, 0, 540)


def test_the_fitted_model_takes_the_rectangle_and_has_its_anchor_grid(tmp_path: Path) -> None:
    source = resolve_asset(MODEL)
    assert square_input(source) == 320
    fitted = fit_file(source, tmp_path / "fitted.onnx", 192, 320)
    model = onnx.load(str(fitted))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 192, 320]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 84, 1260]
    points, strides = anchor_grid(192, 320)
    assert points.shape == (2, 24 * 40 + 12 * 20 + 6 * 10)
    constants = [numpy_helper.to_array(t) for t in model.graph.initializer]
    assert sum(c.shape == (1, 2, 1260) and np.array_equal(c[0], points) for c in constants) == 2
    assert sum(c.shape == (1, 1260) and np.array_equal(c[0], strides) for c in constants) == 1
    assert square_input(fitted) is None
    # The weights are the same tensors.
    before = {t.name: t for t in onnx.load(str(source)).graph.initializer if t.dims[-1:] != [2100]}
    after = {t.name: t for t in model.graph.initializer}
    conv_weights = [n for n, t in before.items() if len(t.dims) == 4]
    assert conv_weights and all(after[n] == before[n] for n in conv_weights)


def test_the_fitted_model_finds_the_square_models_road_users_at_the_same_places(
    frames: list[np.ndarray],
) -> None:
    source = resolve_asset(MODEL)
    square = build_detector(DetectorConfig(), source)
    fitted = build_detector(DetectorConfig(), source, frame_size=(960, 540))
    assert square.input_hw == (320, 320) and fitted.input_hw == (192, 320)
    assert fitted.imgsz == 320 and fitted.model_path == source
    reference = [square.detect(f) for f in frames]
    found = [fitted.detect(f) for f in frames]
    kept, total, count = kept_share(reference, found)
    # The same scale: boxes land on the same road users (a letterbox offset left wrong
    # would move every box by 64 px and match almost none); only marginal scores near
    # the threshold move, as the padding around the image changed (94% over the clip).
    assert total > 300
    assert kept / total >= 0.9 and kept / count >= 0.9


def test_fitting_is_skipped_where_it_does_not_apply(tmp_path: Path) -> None:
    source = resolve_asset(MODEL)
    wide = (960, 540)
    assert build_detector(DetectorConfig(fit_to_frame=False), source, frame_size=wide).input_hw == (
        320,
        320,
    )
    assert build_detector(DetectorConfig(), source, frame_size=(320, 320)).input_hw == (320, 320)
    assert build_detector(DetectorConfig(), source).input_hw == (320, 320)  # size unknown
    # Tiles are crops of other aspects: the model stays square for them.
    tiled = DetectorConfig(tiles="2x2")
    assert build_detector(tiled, source, frame_size=wide).input_hw == (320, 320)


def test_a_model_it_cannot_fit_runs_square_with_a_warning_naming_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = onnx.load(str(resolve_asset(MODEL)))
    for tensor in model.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.shape == (1, 2, 2100):
            tensor.CopyFrom(numpy_helper.from_array(value + 1.0, tensor.name))
            break
    altered = tmp_path / "altered.onnx"
    onnx.save(model, str(altered))
    with pytest.raises(ModelFitError, match="anchor count but not the anchor grid"):
        fit_detection_onnx(model, 192, 320)
    with caplog.at_level(logging.WARNING, logger="rsu.detector"):
        detector = build_detector(DetectorConfig(), altered, frame_size=(960, 540))
    assert detector.input_hw == (320, 320)
    assert "runs at its square input" in caplog.text and "anchor grid" in caplog.text


def _conv_model(input_shape: list[int | str], output_shape: list[int]) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.zeros((84, 3, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"], name="conv"),
        helper.make_node("Flatten", ["conv"], ["output0"], axis=2, name="flat"),
    ]
    graph = helper.make_graph(
        nodes,
        "not-yolo",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, output_shape)],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_other_models_are_refused_with_the_reason() -> None:
    with pytest.raises(ModelFitError, match="not a static"):
        fit_detection_onnx(_conv_model([1, 3, "h", "w"], [1, 84, 0]), 192, 320)
    with pytest.raises(ModelFitError, match="output is not"):
        fit_detection_onnx(_conv_model([1, 3, 320, 320], [1, 84, 102400]), 192, 320)
    # Output shaped like a head, but no anchor grid to re-shape.
    with pytest.raises(ModelFitError, match="not an Ultralytics detection export"):
        fit_detection_onnx(_conv_model([1, 3, 320, 320], [1, 84, 2100]), 192, 320)
    with pytest.raises(ModelFitError, match="not a multiple"):
        fit_detection_onnx(onnx.load(str(resolve_asset(MODEL))), 180, 320)


def test_the_fitted_file_is_kept_by_content_for_the_next_start(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(resolve_asset(MODEL).read_bytes())
    first = cached_fit(source, 192, 320, tmp_path / "cache")
    assert first.parent == tmp_path / "cache" and first.name.startswith("model-320x192-")
    stamp = first.stat().st_mtime_ns
    assert cached_fit(source, 192, 320, tmp_path / "cache") == first  # found, not re-written
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no partial left
    # Another model (other bytes) gets a file of its own.
    model = onnx.load(str(source))
    model.doc_string = "retrained"
    onnx.save(model, str(source))
    assert cached_fit(source, 192, 320, tmp_path / "cache") != first


def test_a_cache_it_cannot_write_falls_back_to_a_temporary_file(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    fitted = cached_fit(resolve_asset(MODEL), 192, 320, blocked / "fitted")
    assert fitted.is_file() and blocked not in fitted.parents
    dims = onnx.load(str(fitted)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 192, 320]
