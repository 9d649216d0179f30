"""Detection accuracy against ground truth: AP from pycocotools, precision/recall at the
operating threshold.

- AP@0.5 and AP@0.5:0.95 come from the official COCO evaluation (pycocotools), on
  detections kept down to a very low score, as COCO evaluation expects.
- Precision and recall are measured at the RSU's operating confidence (what it publishes):
  per image, detections in descending score are matched greedily to the unmatched ground
  truth box of the same class with the highest IoU >= 0.5.  Crowd boxes absorb detections
  without counting as hits or misses (matched, as COCO does, by the share of the detection
  inside the region).
- ``vehicle`` merges car, motorcycle, bus and truck into one class, on both sides.
- :func:`kept_share` compares two models' detections (fp32 against int8, say) the same way.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping

import numpy as np

from common.schemas import VEHICLE_CLASSES
from rsu.detections import Detections
from rsu.groundtruth import GroundTruth
from rsu.tracker import iou_matrix

VEHICLE = "vehicle"
_VEHICLES = {c.value for c in VEHICLE_CLASSES}


def class_mapper(classes: list[str]) -> dict[str, str]:
    """Our class -> evaluated class, for the classes asked (``vehicle`` merges four)."""
    mapping: dict[str, str] = {}
    for name in classes:
        if name == VEHICLE:
            # Ground truth may say only "vehicle" (masks): it maps to itself.
            mapping.update({v: VEHICLE for v in (*_VEHICLES, VEHICLE)})
        else:
            mapping[name] = name
    return mapping


def coco_ap(
    truth: GroundTruth, predictions: Mapping[int, Detections], mapping: dict[str, str]
) -> dict[str, dict[str, float]]:
    """{evaluated class: {ap50, ap50_95}} from pycocotools, plus "all" over the classes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted(set(mapping.values()))
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    annotations, detections = [], []
    for image in truth.images:
        for box in truth.boxes[image.id]:
            if box.category not in mapping:
                continue
            x1, y1, x2, y2 = box.xyxy
            annotations.append({
                "id": len(annotations) + 1, "image_id": image.id,
                "category_id": cat_id[mapping[box.category]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(box.crowd),
            })  # fmt: skip
        found = predictions.get(image.id)
        if found is None:
            continue
        for xyxy, score, name in zip(found.xyxy, found.confidence, found.class_name, strict=True):
            if name not in mapping:
                continue
            x1, y1, x2, y2 = (float(v) for v in xyxy)
            detections.append({
                "image_id": image.id, "category_id": cat_id[mapping[name]],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score),
            })  # fmt: skip
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i.id, "width": i.width, "height": i.height} for i in truth.images],
        "annotations": annotations,
        "categories": [{"id": cat_id[n], "name": n} for n in names],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        if not detections:
            return {n: {"ap50": 0.0, "ap50_95": 0.0} for n in [*names, "all"]}
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 1000]  # dense traffic: far more than 100 per image
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [iou thresholds, recall, class, area, max dets]

    def ap(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else 0.0

    out = {
        name: {
            "ap50": ap(precision[0, :, k, 0, -1]),
            "ap50_95": ap(precision[:, :, k, 0, -1]),
        }
        for k, name in enumerate(names)
    }
    out["all"] = {"ap50": ap(precision[0, :, :, 0, -1]), "ap50_95": ap(precision[:, :, :, 0, -1])}
    return out


def inside_share(box: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of ``box``'s area inside each region (how COCO matches crowd regions)."""
    tl = np.maximum(box[:2], regions[:, :2])
    br = np.minimum(box[2:], regions[:, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=1)
    return inter / max(float(np.prod(box[2:] - box[:2])), 1e-9)


def precision_recall(
    truth: GroundTruth,
    predictions: Mapping[int, Detections],
    mapping: dict[str, str],
    min_score: float,
    iou: float = 0.5,
) -> dict[str, dict[str, float | int]]:
    """{evaluated class: precision, recall, tp, fp, fn, gt} at scores >= ``min_score``."""
    tally: dict[str, dict[str, int]] = {}
    for image in truth.images:
        gt = [b for b in truth.boxes[image.id] if b.category in mapping]
        found = predictions.get(image.id, Detections.empty())
        for name in set(mapping.values()):
            t = tally.setdefault(name, {"tp": 0, "fp": 0, "fn": 0})
            g = [b for b in gt if mapping[b.category] == name]
            g_boxes = np.array([b.xyxy for b in g], np.float64).reshape(-1, 4)
            crowd = np.array([b.crowd for b in g], bool)
            keep = [
                k for k, c in enumerate(found.class_name)
                if mapping.get(c) == name and found.confidence[k] >= min_score
            ]  # fmt: skip
            order = sorted(keep, key=lambda k: -float(found.confidence[k]))
            d_boxes = found.xyxy[order].astype(np.float64).reshape(-1, 4)
            overlaps = iou_matrix(d_boxes, g_boxes)
            used = np.zeros(len(g), bool)
            for i in range(len(order)):
                candidates = np.where(~used & ~crowd, overlaps[i], -1.0)
                j = int(np.argmax(candidates)) if len(g) else -1
                if j >= 0 and candidates[j] >= iou:
                    used[j] = True
                    t["tp"] += 1
                elif crowd.any() and (inside_share(d_boxes[i], g_boxes[crowd]) >= iou).any():
                    continue  # inside a crowd region: neither hit nor false alarm
                else:
                    t["fp"] += 1
            t["fn"] += int((~used & ~crowd).sum())
    out: dict[str, dict[str, float | int]] = {}
    for name, t in tally.items():
        found_n, gt_n = t["tp"] + t["fp"], t["tp"] + t["fn"]
        out[name] = {
            "precision": t["tp"] / found_n if found_n else 0.0,
            "recall": t["tp"] / gt_n if gt_n else 0.0,
            **t,
            "gt": gt_n,
        }
    return out


def kept_share(
    reference: list[Detections], candidate: list[Detections], iou: float = 0.5
) -> tuple[int, int, int]:
    """(reference boxes matched, reference boxes, candidate boxes) over frames: a reference
    box is kept if an unmatched candidate box of the same class overlaps it with IoU >=
    ``iou`` (greedy, in descending reference score).  Matched over candidate boxes is the
    other side: a model that adds boxes keeps more, and matches a smaller share of its own.
    """
    kept = 0
    for ref, cand in zip(reference, candidate, strict=True):
        if not len(ref) or not len(cand):
            continue
        overlap = iou_matrix(ref.xyxy.astype(np.float64), cand.xyxy.astype(np.float64))
        overlap[ref.class_name[:, None] != cand.class_name[None, :]] = 0.0
        used: set[int] = set()
        for i in np.argsort(-ref.confidence):
            for j in np.argsort(-overlap[i]):
                if overlap[i, j] < iou:
                    break
                if j not in used:
                    used.add(int(j))
                    kept += 1
                    break
    return kept, sum(len(r) for r in reference), sum(len(c) for c in candidate)
