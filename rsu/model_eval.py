"""``rsu eval``: run a detector over annotated images and score it against the annotation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2

from common.datadir import resolve_asset
from rsu.detections import Detections
from rsu.detector import DetectorConfig, build_detector
from rsu.evaluation import class_mapper, coco_ap, precision_recall
from rsu.groundtruth import GroundTruth, GroundTruthError, load_coco

LOADERS = {"coco": load_coco}
AP_MIN_SCORE = 0.001  # COCO evaluation ranks all detections; the operating point is separate


def evaluate_model(
    images: Path,
    gt_path: Path,
    fmt: str,
    classes: list[str],
    detector_config: DetectorConfig,
    data_dir: str | None = None,
) -> dict[str, Any]:
    if fmt not in LOADERS:
        raise GroundTruthError(f"format {fmt!r} is not supported yet (have: {sorted(LOADERS)})")
    truth: GroundTruth = LOADERS[fmt](gt_path)
    model = resolve_asset(detector_config.model, data_dir)
    operating = build_detector(detector_config, model)
    # AP ranks detections down to a very low score; precision/recall and the time per
    # image are taken at the operating confidence, as the RSU runs.
    low = detector_config.model_copy(update={"confidence": AP_MIN_SCORE, "class_confidence": {}})
    ranked = build_detector(low, model)
    predictions: dict[int, Detections] = {}
    times = []
    for image in truth.images:
        path = images / image.file_name
        frame = cv2.imread(str(path))
        if frame is None:
            raise GroundTruthError(f"image {path} (named in {gt_path.name}) cannot be read")
        predictions[image.id] = ranked.detect(frame)
        start = time.perf_counter()
        operating.detect(frame)
        times.append((time.perf_counter() - start) * 1000)

    asked = class_mapper(classes)
    overall = coco_ap(truth, predictions, asked)["all"]
    members = sorted(asked)  # each of our classes the asked ones cover, scored on its own
    per_class: dict[str, dict[str, Any]] = {}
    for name in [*members, *(c for c in classes if c not in members)]:
        mapping = class_mapper([name])
        label = next(iter(set(mapping.values())))
        ap = coco_ap(truth, predictions, mapping)[label]
        pr = precision_recall(truth, predictions, mapping, detector_config.confidence)[label]
        per_class[label] = {
            "ap50": round(ap["ap50"], 4),
            "ap50_95": round(ap["ap50_95"], 4),
            "precision": round(float(pr["precision"]), 4),
            "recall": round(float(pr["recall"]), 4),
            "gt": pr["gt"],
        }
    return {
        "ap50": round(overall["ap50"], 4),
        "ap50_95": round(overall["ap50_95"], 4),
        "classes_asked": classes,
        "classes": per_class,
        "images": len(truth.images),
        "model": model.name,
        "imgsz": operating.imgsz,
        "operating_confidence": detector_config.confidence,
        "ms_per_image": round(sorted(times)[len(times) // 2], 2) if times else None,
        "gt_dropped_categories": dict(truth.dropped),
    }
