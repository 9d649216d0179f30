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
