"""Counting error: the line crossings an RSU counts against those in the ground truth.

Ground-truth counts come from the annotation's own tracks, passed through the very same
:class:`~rsu.lines.LineCounter` the RSU uses (same anchor, margin, confirmation frames and
frame-edge rules), so that the difference measures detection and tracking, not two counting
rules.  Where the tracks come from:

- MOT ``gt.txt`` and DETRAC XML: the annotated identities.
- CDnet masks, which have no identities:
  - The components of moving pixels (the boxes of :func:`~rsu.groundtruth.load_cdnet_masks`)
    are linked frame to frame by overlap (IoU >= 0.3).
  - Shadows are marked apart from vehicles (50, not 255), so two vehicles side by side are
    not joined by their shadows.
  - Two vehicles whose own pixels touch, as when a near one hides part of the one behind it,
    are one component for those frames. If they cross the line while joined, they count once,
    and the ground truth is one short.
  - Cutting components along the lanes was tried and dropped: a car riding over the lane
    divider at the line then counted twice (highway_overpass, frame 1206).

Both sides see the same frames: the annotated span of the clip.  A vehicle already past a
line when that span starts is counted by neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rsu.config import RsuConfig
from rsu.detections import Detections
from rsu.groundtruth import GroundTruth, GroundTruthError, GtBox
from rsu.lines import LineCounter, LineSpec
from rsu.scene import LaneMap, SceneConfig

LINK_IOU = 0.3


def line_counter(scene: SceneConfig, config: RsuConfig) -> LineCounter:
    return LineCounter(
        [LineSpec(line.id, line.points[0], line.points[1], line.lane_id) for line in scene.lines],
        margin=config.crossing_margin,
        min_frames=config.crossing_min_frames,
    )


def count_crossings(
    frames: Iterable[Detections], scene: SceneConfig, config: RsuConfig, size: tuple[int, int]
) -> Counter[tuple[str, bool]]:
    """(line id, positive) -> crossings, over tracked detections frame by frame."""
    lanes, counter = LaneMap(scene.lanes), line_counter(scene, config)
    counts: Counter[tuple[str, bool]] = Counter()
    for detections in frames:
        detections.lane_id = lanes.assign(detections.bottom_centres())
        for crossing in counter.update(detections, size):
            counts[(crossing.line_id, crossing.positive)] += 1
    return counts


def truth_tracks(truth: GroundTruth) -> Iterator[Detections]:
    """The annotation, frame by frame in video order, as tracked detections (crowd left out)."""
    for image in sorted(truth.images, key=lambda i: i.frame_index or 0):
        boxes = [b for b in truth.boxes.get(image.id, []) if not b.crowd]
        if any(b.track_id is None for b in boxes):
            raise GroundTruthError(
                "counting needs track identities: use MOT, DETRAC or masks ground truth"
            )
        detections = Detections(
            xyxy=np.array([b.xyxy for b in boxes], np.float32).reshape(-1, 4),
            confidence=np.ones(len(boxes), np.float32),
            class_name=np.array([b.category for b in boxes], dtype=object),
        )
        detections.track_id = np.array([b.track_id for b in boxes], np.int64)
        yield detections


def link_mask_tracks(truth: GroundTruth) -> None:
    """Give the mask components of :func:`~rsu.groundtruth.load_cdnet_masks` identities:
    each is linked to the best-overlapping unlinked component of the frame before."""
    next_id = 1
    previous: list[GtBox] = []
    for image in sorted(truth.images, key=lambda i: i.frame_index or 0):
        linked: list[GtBox] = []
        taken: set[int] = set()
        for box in truth.boxes.get(image.id, []):
            candidates = [
                (_iou(box.xyxy, old.xyxy), old.track_id)
                for old in previous
                if old.track_id is not None and old.track_id not in taken
            ]
            score, track = max(candidates, default=(0.0, None))
            if track is None or score < LINK_IOU:
                track, next_id = next_id, next_id + 1
            taken.add(track)
            linked.append(replace(box, track_id=track))
        truth.boxes[image.id] = linked
        previous = linked


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def rsu_tracks(video: Path, first: int, last: int, config: RsuConfig) -> Iterator[Detections]:
    """The RSU's own detector and tracker over video frames ``first..last`` (0-based)."""
    from rsu.components import detector_for, tracker_for

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise GroundTruthError(f"cannot open video {video}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frame_size = (
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    detector, tracker = detector_for(config, frame_size), tracker_for(config, fps)
    try:
        for index in range(last + 1):
            if index < first:
                if not capture.grab():
                    return
                continue
            ok, frame = capture.read()
            if not ok:
                return
            detections = detector.detect(frame)
            if tracker is not None:
                detections = tracker.update(detections, detector.passes_confidence(detections))
            yield detections
    finally:
        capture.release()


def counting_error(
    truth_counts: Counter[tuple[str, bool]],
    rsu_counts: Counter[tuple[str, bool]],
    scene: SceneConfig,
) -> dict[str, Any]:
    """Per line and direction: both counts and the signed error; overall: the absolute
    errors summed over lines and directions, divided by the ground-truth total."""
    lines: dict[str, Any] = {}
    absolute, total = 0, 0
    for line in scene.lines:
        entry: dict[str, Any] = {}
        for positive, name in ((True, "positive"), (False, "negative")):
            gt, ours = truth_counts[(line.id, positive)], rsu_counts[(line.id, positive)]
            absolute += abs(ours - gt)
            total += gt
            entry[name] = {
                "gt": gt,
                "rsu": ours,
                "error": round((ours - gt) / gt, 4) if gt else None,
            }
        lines[line.id] = entry
    return {
        "count_error": round(absolute / total, 4) if total else None,
        "gt_crossings": total,
        "rsu_crossings": sum(rsu_counts.values()),
        "lines": lines,
    }
