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
    track_id: int | None = None  # the annotated identity across frames (MOT, DETRAC)


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


# MOT17 class ids: 1 pedestrian, 2 person on vehicle, 3 car, 4 bicycle, 5 motorbike,
# 6 non-motorized vehicle, 7 static person, 8 distractor, 9-11 occluders, 12 reflection.
MOT_CLASSES = {1: "person", 2: "person", 3: "car", 4: "bicycle", 5: "motorcycle", 7: "person"}
MOT_IGNORED = {6, 8, 9, 10, 11, 12}  # not our road users, and not errors either


def load_mot(path: Path, default_class: str = "car") -> GroundTruth:
    """MOT-style ``gt.txt``: ``frame, id, left, top, width, height[, conf, class, visibility]``.

    Rows with ``conf`` 0, or of a class marked ignored in MOT17, are ignore regions (crowd):
    a detection there is neither a hit nor a false alarm.  Files without a class column
    (6 or 7 columns) describe one class, ``default_class``.  Frame N is video frame N - 1,
    image ``{N:06d}.jpg`` of a folder.
    """
    if our_class(default_class) is None:
        raise GroundTruthError(
            f"default class {default_class!r} is not one of {sorted(OUR_CLASSES)}"
        )
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise GroundTruthError(f"cannot read {path}: {exc.strerror}") from None
    truth = GroundTruth(images=[], boxes={})
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            frame, x, y, w, h = int(fields[0]), *(float(v) for v in fields[2:6])
            identity = int(float(fields[1]))
            conf = float(fields[6]) if len(fields) > 6 else 1.0
            mot_class = int(float(fields[7])) if len(fields) > 7 else None
        except (ValueError, IndexError):
            raise GroundTruthError(f"{path}:{number}: not a MOT row: {line!r:.120}") from None
        if frame not in truth.boxes:
            truth.boxes[frame] = []
            truth.images.append(GtImage(frame, f"{frame:06d}.jpg", 0, 0, frame_index=frame - 1))
        if mot_class is None:
            category: str | None = our_class(default_class)
        else:
            category = MOT_CLASSES.get(mot_class)
        box = (x, y, x + w, y + h)
        if conf == 0 or mot_class in MOT_IGNORED:
            truth.boxes[frame].append(GtBox(box, category or default_class, crowd=True))
        elif category is None:
            truth.dropped[f"mot class {mot_class}"] += 1
        else:
            truth.boxes[frame].append(GtBox(box, category, track_id=identity))
    truth.images.sort(key=lambda i: i.id)
    return truth


DETRAC_TYPES = {"car": "car", "van": "car", "bus": "bus", "others": "truck"}


def load_detrac(path: Path) -> GroundTruth:
    """UA-DETRAC XML: ``<frame num>`` targets with ``vehicle_type`` (car, van, bus, others).

    Van counts as car and "others" (trucks, tankers) as truck.  The sequence's
    ``<ignored_region>`` boxes are ignore regions in every frame.  Frame N is image
    ``img{N:05d}.jpg``, video frame N - 1.
    """
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise GroundTruthError(f"cannot read DETRAC XML {path}: {exc}") from None

    def box_of(element: ElementTree.Element) -> tuple[float, float, float, float]:
        x, y = float(element.get("left", 0)), float(element.get("top", 0))
        return (x, y, x + float(element.get("width", 0)), y + float(element.get("height", 0)))

    ignored = [GtBox(box_of(b), "car", crowd=True) for b in root.iterfind("ignored_region/box")]
    truth = GroundTruth(images=[], boxes={})
    for frame in root.iterfind("frame"):
        number = int(frame.get("num", "0"))
        truth.images.append(GtImage(number, f"img{number:05d}.jpg", 0, 0, frame_index=number - 1))
        boxes = list(ignored)
        for target in frame.iterfind("target_list/target"):
            box, attribute = target.find("box"), target.find("attribute")
            kind = (attribute.get("vehicle_type", "") if attribute is not None else "").lower()
            if box is None or kind not in DETRAC_TYPES:
                truth.dropped[kind or "untyped"] += 1
                continue
            identity = int(target.get("id", "0")) or None
            boxes.append(GtBox(box_of(box), DETRAC_TYPES[kind], track_id=identity))
        truth.boxes[number] = boxes
    if not truth.images:
        raise GroundTruthError(f"{path} has no <frame> elements: not DETRAC XML")
    return truth
