"""Letterbox geometry and NMS on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np

from rsu.detector import batched_nms, letterbox, nms


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)
    # IoU(3, 0) = 0.9, IoU(3, 1) = 72/90 = 0.8, IoU(0, 1) = 0.81
    assert nms(boxes, scores, 0.7).tolist() == [3, 2]
    assert nms(boxes, scores, 0.85).tolist() == [3, 1, 2]


def test_batched_nms_never_suppresses_across_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert batched_nms(boxes, scores, np.array([0, 0]), 0.5).tolist() == [0]
    assert sorted(batched_nms(boxes, scores, np.array([0, 1]), 0.5).tolist()) == [0, 1]


def test_letterbox_pads_and_scales_a_wide_frame() -> None:
    image = np.full((540, 960, 3), 200, np.uint8)
    out = np.empty((320, 320, 3), np.uint8)
    box = letterbox(image, out)
    assert box.scale == 320 / 960
    assert (box.pad_x, box.pad_y) == (0, 70)  # 960x540 -> 320x180, centred vertically
    assert (out[:70] == 114).all() and (out[250:] == 114).all()
    assert (out[70:250] == 200).all()


def test_letterbox_into_an_input_fitted_to_the_frame_pads_only_to_the_stride() -> None:
    image = np.full((540, 960, 3), 200, np.uint8)
    out = np.empty((192, 320, 3), np.uint8)  # rsu.model_fit's input for 960x540 at 320
    box = letterbox(image, out)
    assert box.scale == 320 / 960
    assert (box.pad_x, box.pad_y) == (0, 6)
    assert (out[:6] == 114).all() and (out[186:] == 114).all() and (out[6:186] == 200).all()
    tall = np.full((960, 540, 3), 50, np.uint8)  # a portrait camera into the same input
    box = letterbox(tall, out)
    assert box.scale == 192 / 960
    assert (box.pad_x, box.pad_y) == ((320 - 108) // 2, 0)
    assert (out[:, box.pad_x : box.pad_x + 108] == 50).all()
    assert (out[:, : box.pad_x] == 114).all() and (out[:, box.pad_x + 108 :] == 114).all()


def test_nms_groups_merge_car_and_truck_boxes_of_one_vehicle() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9.5], [0, 0, 10, 9]], dtype=np.float32)
    scores = np.array([0.6, 0.5, 0.4], dtype=np.float32)
    groups = np.array([0, 0, 1])  # car and truck share group 0; a rider's motorcycle is 1
    assert sorted(batched_nms(boxes, scores, groups, 0.7).tolist()) == [0, 2]


def test_providers_follow_preference_skip_missing_and_end_with_cpu(tmp_path) -> None:
    from rsu.detector import DetectorConfig, session_providers

    config = DetectorConfig(
        providers=["tensorrt", "cuda", "cpu"], fp16=True, engine_cache=str(tmp_path / "trt")
    )
    jetson = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = session_providers(config, jetson)
    assert [p if isinstance(p, str) else p[0] for p in chosen] == jetson
    trt_options = chosen[0][1]
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_fp16_enable"]
    assert (tmp_path / "trt").is_dir()  # engines built on first start are kept here
    assert session_providers(config, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert session_providers(DetectorConfig(providers=["cuda"]), jetson) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
