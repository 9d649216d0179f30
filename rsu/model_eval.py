"""``rsu eval``: run a detector over annotated images and score it against the annotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.datadir import resolve_asset
from rsu.config import RsuConfig
from rsu.count_eval import (
    count_crossings,
    counting_error,
    link_mask_tracks,
    rsu_tracks,
    truth_tracks,
)
from rsu.detections import Detections
from rsu.detector import DetectorConfig, build_detector
from rsu.evaluation import class_mapper, coco_ap, precision_recall
from rsu.groundtruth import (
    GroundTruth,
    GroundTruthError,
    load_cdnet_masks,
    load_coco,
    load_detrac,
    load_mot,
)
from rsu.scene import SceneConfig
from rsu.tiling import TiledDetector

FORMATS = ("coco", "mot", "detrac", "masks")
AP_MIN_SCORE = 0.001  # COCO evaluation ranks all detections; the operating point is separate


def load_truth(fmt: str, gt_path: Path, stride: int) -> GroundTruth:
    if fmt == "coco":
        return load_coco(gt_path)
    if fmt == "mot":
        return load_mot(gt_path)
    if fmt == "detrac":
        return load_detrac(gt_path)
    if fmt == "masks":  # CDnet layout: ROI.bmp and temporalROI.txt beside the mask folder
        roi, temporal = gt_path.parent / "ROI.bmp", gt_path.parent / "temporalROI.txt"
        return load_cdnet_masks(
            gt_path, roi if roi.exists() else None, temporal if temporal.exists() else None,
            stride=stride,
        )  # fmt: skip
    raise GroundTruthError(f"format {fmt!r} is not supported yet (have: {', '.join(FORMATS)})")


def frames_of(images: Path, truth: GroundTruth, gt_path: Path) -> Iterator[tuple[int, Any]]:
    """(image id, BGR frame) for every annotated image, from a folder or from a video."""
    if images.is_file():
        wanted = {i.frame_index: i.id for i in truth.images if i.frame_index is not None}
        if not wanted:
            raise GroundTruthError(f"{gt_path.name} names files, not frames of a video")
        capture = cv2.VideoCapture(str(images))
        if not capture.isOpened():
            raise GroundTruthError(f"cannot open video {images}")
        index = 0
        while wanted and index <= max(wanted):
            if index in wanted:
                ok, frame = capture.read()
                if not ok:
                    break
                yield wanted.pop(index), frame
            elif not capture.grab():
                break
            index += 1
        capture.release()
        return  # frames the video lacks are left out of scoring (see evaluate_model)
    for image in truth.images:
        path = images / image.file_name
        frame = cv2.imread(str(path))
        if frame is None:
            raise GroundTruthError(f"image {path} (named in {gt_path.name}) cannot be read")
        yield image.id, frame


def evaluate_model(
    images: Path,
    gt_path: Path,
    fmt: str,
    classes: list[str],
    detector_config: DetectorConfig,
    data_dir: str | None = None,
    stride: int = 1,
    tiles: tuple[int, int] | None = None,
    scene: SceneConfig | None = None,
) -> dict[str, Any]:
    truth = load_truth(fmt, gt_path, stride)
    model = resolve_asset(detector_config.model, data_dir)
    # AP ranks detections down to a very low score; precision/recall and the time per
    # image are taken at the operating confidence, as the RSU runs.
    low = detector_config.model_copy(update={"confidence": AP_MIN_SCORE, "class_confidence": {}})
    operating = ranked = None
    predictions: dict[int, Detections] = {}
    times = []
    for image_id, frame in frames_of(images, truth, gt_path):
        if operating is None or ranked is None:
            # Fitted to the first image's size, as an RSU is to its camera's frames.
            size = (frame.shape[1], frame.shape[0]) if tiles is None else None
            operating = build_detector(detector_config, model, frame_size=size)
            ranked = build_detector(low, model, frame_size=size)
            if tiles is not None:
                operating = TiledDetector(operating, *tiles)  # type: ignore[assignment]
                ranked = TiledDetector(ranked, *tiles)  # type: ignore[assignment]
        predictions[image_id] = ranked.detect(frame)
        start = time.perf_counter()
        operating.detect(frame)
        times.append((time.perf_counter() - start) * 1000)

    # A video shorter than its annotation (a container one frame short, say): those frames
    # are not scored, rather than scored as all missed, and the output says how many.
    unread = [i for i in truth.images if i.id not in predictions]
    if len(unread) == len(truth.images):
        raise GroundTruthError(f"no annotated frame could be read from {images}")
    truth.images = [i for i in truth.images if i.id in predictions]
    asked = class_mapper(classes)
    overall = coco_ap(truth, predictions, asked)["all"]
    members = sorted(asked)  # each of our classes the asked ones cover, scored on its own
    per_class: dict[str, dict[str, Any]] = {}
    for name in [*members, *(c for c in classes if c not in members)]:
        mapping = class_mapper([name])
        label = next(iter(set(mapping.values())))
        ap = coco_ap(truth, predictions, mapping)[label]
        pr = precision_recall(truth, predictions, mapping, detector_config.confidence)[label]
        if not pr["gt"]:
            continue  # the ground truth has none of this class: nothing to score
        per_class[label] = {
            "ap50": round(ap["ap50"], 4),
            "ap50_95": round(ap["ap50_95"], 4),
            "precision": round(float(pr["precision"]), 4),
            "recall": round(float(pr["recall"]), 4),
            "gt": pr["gt"],
        }
    figures: dict[str, Any] = {
        "ap50": round(overall["ap50"], 4),
        "ap50_95": round(overall["ap50_95"], 4),
        "classes_asked": classes,
        "classes": per_class,
        "images": len(truth.images),
        "model": model.name,
        "imgsz": operating.imgsz,  # (a frame was read: see above)
        "input": f"{operating.input_hw[1]}x{operating.input_hw[0]}",
        "operating_confidence": detector_config.confidence,
        "tiles": f"{tiles[0]}x{tiles[1]}" if tiles else None,
        "ms_per_image": round(sorted(times)[len(times) // 2], 2) if times else None,
        "gt_dropped_categories": dict(truth.dropped),
        "annotated_frames_not_in_video": len(unread),
    }
    if scene is not None and scene.lines:
        counting = evaluate_counting(
            images, gt_path, fmt, scene, detector_config, data_dir, sorted(asked)
        )
        figures["count_error"] = counting["count_error"]
        figures["counting"] = counting
    return figures


def evaluate_counting(
    video: Path,
    gt_path: Path,
    fmt: str,
    scene: SceneConfig,
    detector_config: DetectorConfig,
    data_dir: str | None,
    classes: list[str],
) -> dict[str, Any]:
    """Line crossings of the RSU's detector and tracker against the annotation's tracks,
    over every annotated frame of the video (see :mod:`rsu.count_eval`)."""
    if not video.is_file():
        raise GroundTruthError("counting needs --images to be the video, not a folder")
    truth = load_truth(fmt, gt_path, stride=1)
    if fmt == "masks":
        link_mask_tracks(truth)
    indices = [i.frame_index for i in truth.images if i.frame_index is not None]
    first, last = min(indices), max(indices)
    config = RsuConfig(rsu_id="eval", detector=detector_config, data_dir=data_dir)
    probe = cv2.VideoCapture(str(video))
    size = (int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)), int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    probe.release()
    wanted = list(classes)
    tracked = rsu_tracks(video, first, last, config)
    ours = (d.subset(np.isin(d.class_name, wanted)) for d in tracked)
    rsu_counts = count_crossings(ours, scene, config, size)
    truth_counts = count_crossings(truth_tracks(truth), scene, config, size)
    result = counting_error(truth_counts, rsu_counts, scene)
    result["frames"] = [first, last]
    return result
