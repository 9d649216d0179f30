"""Ground-truth boxes of annotated images, mapped to the RSU's road-user classes.

One in-memory form for every annotation format: images (id, file, size) and, per image,
boxes (x1, y1, x2, y2 in pixels) with our class name.  Categories are matched by *name*
(COCO files number them differently: 1-based ids, or their own); annotations of other
categories are dropped and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from common.schemas import RoadUserClass

VEHICLE = "vehicle"  # ground truth that does not say which kind of vehicle (masks)
OUR_CLASSES = {c.value for c in RoadUserClass}
# Names other datasets use for our classes.
ALIASES = {"van": "car", "pedestrian": "person", "cyclist": "bicycle", "motorbike": "motorcycle"}


class GroundTruthError(ValueError):
    pass


@dataclass(frozen=True)
class GtImage:
    id: int
    file_name: str
    width: int
    height: int
    frame_index: int | None = None  # 0-based frame of a video, for video ground truth


@dataclass(frozen=True)
class GtBox:
    xyxy: tuple[float, float, float, float]
    category: str
    crowd: bool = False  # a region that may hold many objects: neither hit nor miss


@dataclass
class GroundTruth:
    images: list[GtImage]
    boxes: dict[int, list[GtBox]]
    dropped: Counter[str] = field(default_factory=Counter)  # annotations of other categories

    def counts(self) -> Counter[str]:
        return Counter(b.category for boxes in self.boxes.values() for b in boxes if not b.crowd)


def our_class(name: str) -> str | None:
    name = name.strip().lower()
    name = ALIASES.get(name, name)
    return name if name in OUR_CLASSES else None


def load_coco(path: Path) -> GroundTruth:
    """A COCO detection JSON: ``images``, ``annotations`` (bbox x, y, w, h), ``categories``."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise GroundTruthError(f"ground truth not found: {path}") from None
    except orjson.JSONDecodeError as exc:
        raise GroundTruthError(f"{path} is not JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise GroundTruthError(f"{path} is not COCO detection JSON: no `{key}` list")
    names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    images = [
        GtImage(int(i["id"]), str(i["file_name"]), int(i["width"]), int(i["height"]))
        for i in data["images"]
    ]
    known = {i.id for i in images}
    truth = GroundTruth(images=images, boxes={i.id: [] for i in images})
    for n, ann in enumerate(data["annotations"]):
        try:
            image_id, (x, y, w, h) = int(ann["image_id"]), (float(v) for v in ann["bbox"])
            category = names[int(ann["category_id"])]
        except (KeyError, TypeError, ValueError):
            raise GroundTruthError(f"{path}: annotation #{n} is malformed: {ann!r:.200}") from None
        if image_id not in known:
            raise GroundTruthError(f"{path}: annotation #{n} names unknown image {image_id}")
        ours = our_class(category)
        if ours is None:
            truth.dropped[category] += 1
            continue
        crowd = bool(ann.get("iscrowd", 0))
        truth.boxes[image_id].append(GtBox((x, y, x + w, y + h), ours, crowd))
    return truth


# CDnet 2014 ground-truth pixel values.
CDNET_MOVING, CDNET_UNKNOWN, CDNET_OUTSIDE_ROI, CDNET_SHADOW = 255, 170, 85, 50


def load_cdnet_masks(
    mask_dir: Path,
    roi: Path | None = None,
    temporal_roi: Path | None = None,
    min_area: int = 25,
    stride: int = 1,
) -> GroundTruth:
    """CDnet-style masks (``gtNNNNNN.png`` for frame N, counting from 1) -> vehicle boxes.

    Each 8-connected component of moving pixels (255) inside the spatial ROI (``roi``:
    non-zero pixels; the masks' own 85 marks outside) is one vehicle box.  Frames outside the
    temporal ROI (``temporalROI.txt``: first and last scored frame) are not scored.  Shadow
    (50) and unknown (170, object borders) pixels are not vehicle.  Components smaller than
    ``min_area`` pixels are mask noise and are ignored.

    Merged vehicles: two vehicles touching in the image form one component, hence one box;
    a detector that finds both scores one miss and two false alarms there, so recall on
    dense traffic is a lower bound.  Masks mark only *moving* objects, so a standing
    vehicle's detection is a false alarm that is not one: read recall, not precision.
    """
    import cv2
    import numpy as np

    first, last = 1, None
    if temporal_roi is not None:
        try:
            first, last = (int(v) for v in temporal_roi.read_text().split()[:2])
        except (OSError, ValueError):
            raise GroundTruthError(f"{temporal_roi} must hold two frame numbers") from None
    roi_mask = None
    if roi is not None:
        roi_mask = cv2.imread(str(roi), cv2.IMREAD_GRAYSCALE)
        if roi_mask is None:
            raise GroundTruthError(f"cannot read ROI image {roi}")
    paths = sorted(mask_dir.glob("gt*.png"))
    if not paths:
        raise GroundTruthError(f"no gt*.png masks in {mask_dir}")
    truth = GroundTruth(images=[], boxes={})
    for path in paths:
        try:
            number = int(path.stem[2:])
        except ValueError:
            continue
        if number < first or (last is not None and number > last) or (number - first) % stride:
            continue
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise GroundTruthError(f"cannot read mask {path}")
        moving = mask == CDNET_MOVING
        if roi_mask is not None:
            moving &= roi_mask > 0
        count, _, stats, _ = cv2.connectedComponentsWithStats(moving.astype(np.uint8), 8)
        height, width = mask.shape
        truth.images.append(GtImage(number, path.name, width, height, frame_index=number - 1))
        boxes = []
        for x, y, w, h, area in stats[1:count].tolist():
            if area < min_area:
                truth.dropped["mask noise"] += 1
                continue
            boxes.append(GtBox((float(x), float(y), float(x + w), float(y + h)), VEHICLE))
        truth.boxes[number] = boxes
    return truth
