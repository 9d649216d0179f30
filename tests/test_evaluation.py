"""The metric code on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from rsu.detections import Detections
from rsu.evaluation import class_mapper, coco_ap, precision_recall
from rsu.groundtruth import GroundTruth, GtBox, GtImage


def truth(*boxes: GtBox) -> GroundTruth:
    return GroundTruth(images=[GtImage(1, "a.jpg", 640, 480)], boxes={1: list(boxes)})


def found(*rows: tuple[tuple[float, float, float, float], float, str]) -> dict[int, Detections]:
    return {
        1: Detections(
            xyxy=np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
            confidence=np.array([r[1] for r in rows], np.float32),
            class_name=np.array([r[2] for r in rows], dtype=object),
        )
    }


CARS = class_mapper(["car"])
A, B = (10, 10, 110, 110), (300, 200, 400, 260)


def test_perfect_detections_score_one() -> None:
    ap = coco_ap(
        truth(GtBox(A, "car"), GtBox(B, "car")), found((A, 0.9, "car"), (B, 0.8, "car")), CARS
    )
    assert ap["car"] == {"ap50": pytest.approx(1.0), "ap50_95": pytest.approx(1.0)}


def test_half_the_cars_found() -> None:
    ap = coco_ap(truth(GtBox(A, "car"), GtBox(B, "car")), found((A, 0.9, "car")), CARS)
    # 101-point interpolation: precision 1 for recall 0 .. 0.5, then nothing.
    assert ap["car"]["ap50"] == pytest.approx(51 / 101)


def test_a_false_alarm_scored_above_the_hit_halves_precision() -> None:
    ap = coco_ap(truth(GtBox(A, "car")), found((B, 0.9, "car"), (A, 0.8, "car")), CARS)
    assert ap["car"]["ap50"] == pytest.approx(0.5)


def test_a_loose_box_passes_only_the_lower_iou_thresholds() -> None:
    loose = (10, 10, 110, 72)  # IoU with A = 62 / 100
    ap = coco_ap(truth(GtBox(A, "car")), found((loose, 0.9, "car")), CARS)
    assert ap["car"]["ap50"] == pytest.approx(1.0)
    assert ap["car"]["ap50_95"] == pytest.approx(0.3)  # 0.50, 0.55, 0.60 of ten thresholds


def test_vehicle_merges_classes_the_detector_confuses() -> None:
    gt, dt = truth(GtBox(A, "car")), found((A, 0.9, "truck"))
    assert coco_ap(gt, dt, class_mapper(["car", "truck"]))["car"]["ap50"] == 0.0
    assert coco_ap(gt, dt, class_mapper(["vehicle"]))["vehicle"]["ap50"] == pytest.approx(1.0)


def test_precision_recall_at_the_operating_threshold_with_a_crowd_region() -> None:
    gt = truth(GtBox(A, "car"), GtBox(B, "car"), GtBox((500, 300, 640, 480), "car", crowd=True))
    dt = found(
        (A, 0.9, "car"),  # hit
        (A, 0.85, "car"),  # duplicate: false alarm
        (B, 0.1, "car"),  # below the operating score: not published
        ((510, 310, 600, 400), 0.7, "car"),  # inside the crowd region: ignored
        ((200, 400, 260, 450), 0.6, "car"),  # nothing there: false alarm
    )
    pr = precision_recall(gt, dt, CARS, min_score=0.25)["car"]
    assert (pr["tp"], pr["fp"], pr["fn"], pr["gt"]) == (1, 2, 1, 2)
    assert pr["precision"] == pytest.approx(1 / 3) and pr["recall"] == pytest.approx(0.5)


def test_no_detections_at_all() -> None:
    ap = coco_ap(truth(GtBox(A, "car")), {}, CARS)
    assert ap["car"]["ap50"] == 0.0


def test_cdnet_masks_become_one_box_per_moving_component(tmp_path) -> None:
    import cv2

    from rsu.groundtruth import load_cdnet_masks

    masks = tmp_path / "gt_masks"
    masks.mkdir()
    for number in range(1, 7):
        mask = np.zeros((60, 80), np.uint8)
        mask[10:20, 10:30] = 255  # a vehicle
        mask[9, 10:30] = 170  # its unknown border: not vehicle
        mask[40:50, 50:70] = 255  # another, overlapping the ROI's edge
        mask[30:32, 5:7] = 255  # 4 px of mask noise
        mask[55:58, 0:20] = 50  # shadow: not vehicle
        cv2.imwrite(str(masks / f"gt{number:06d}.png"), mask)
    roi = np.full((60, 80), 255, np.uint8)
    roi[:, 60:] = 0  # the right part is outside the ROI
    cv2.imwrite(str(tmp_path / "ROI.bmp"), roi)
    (tmp_path / "temporalROI.txt").write_text("3 5\n")
    truth = load_cdnet_masks(masks, tmp_path / "ROI.bmp", tmp_path / "temporalROI.txt")
    assert [i.id for i in truth.images] == [3, 4, 5]  # only the scored frames
    assert [i.frame_index for i in truth.images] == [2, 3, 4]  # gt000003 is video frame 2
    boxes = truth.boxes[4]
    assert [b.xyxy for b in boxes] == [(10.0, 10.0, 30.0, 20.0), (50.0, 40.0, 60.0, 50.0)]
    assert all(b.category == "vehicle" for b in boxes)
    assert truth.dropped["mask noise"] == 3  # once per scored frame
    every_other = load_cdnet_masks(masks, None, tmp_path / "temporalROI.txt", stride=2)
    assert [i.id for i in every_other.images] == [3, 5]


def test_vehicle_ground_truth_without_a_kind_scores_all_vehicle_detections() -> None:
    gt = truth(GtBox(A, "vehicle"), GtBox(B, "vehicle"))
    dt = found((A, 0.9, "car"), (B, 0.8, "truck"))
    assert coco_ap(gt, dt, class_mapper(["vehicle"]))["vehicle"]["ap50"] == pytest.approx(1.0)
