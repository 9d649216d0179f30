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
