"""Scene geometry of one camera: calibration (image -> ground) and lanes.

A scene file (``replay_data/*.yaml``) describes what a camera sees.  Lanes are polygons in
image pixels; a road user is in the lane that contains its bottom-centre point.  The optional
calibration is a homography fitted to at least four image <-> ground point pairs (ground in
metres in a local scene frame, x east, y north).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from shapely import STRtree, points
from shapely.geometry import Polygon
from shapely.validation import explain_validity

from common.config import StrictModel
from common.schemas import RoadUserClass, repeated
from rsu.detector import DetectorConfig

Point2 = tuple[float, float]
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


class GeoOrigin(StrictModel):
    lat: float = Field(ge=-90, le=90, description="WGS84 latitude of the ground origin")
    lon: float = Field(ge=-180, le=180, description="WGS84 longitude of the ground origin")


class Calibration(StrictModel):
    image_points: list[Point2] = Field(min_length=4, description="pixel x, y of reference points")
    ground_points: list[Point2] = Field(min_length=4, description="metres x, y of the same points")
    note: str | None = Field(None, description="how the ground distances were estimated")
    origin: GeoOrigin | None = Field(
        None, description="where ground (0, 0) is on Earth; ground x must point east, y north"
    )

    @model_validator(mode="after")
    def _same_length(self) -> Calibration:
        if len(self.image_points) != len(self.ground_points):
            raise ValueError(
                f"image_points has {len(self.image_points)} points but ground_points has "
                f"{len(self.ground_points)}"
            )
        return self


def simple_polygon(value: list[Point2]) -> list[Point2]:
    polygon = Polygon(value)
    if not polygon.is_valid:
        raise ValueError(f"polygon is not a simple polygon: {explain_validity(polygon)}")
    if polygon.area <= 0:
        raise ValueError("polygon has zero area")
    return value


class Lane(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="lane id, unique in the scene")
    polygon: list[Point2] = Field(min_length=3, description="image polygon, pixels")
    approach: str | None = Field(None, description="approach name, e.g. north")
    direction: str | None = Field(None, description="inbound or outbound")
    movements: list[str] = Field(default_factory=list, description="e.g. through, left, right")

    _simple = field_validator("polygon")(simple_polygon)


class CountingLine(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="line id, unique in the scene")
    points: tuple[Point2, Point2] = Field(description="p1, p2 in image pixels")
    kind: Literal["count", "stop"] = Field(
        "count", description="stop lines also measure queues; both kinds count crossings"
    )
    lane_id: str | None = Field(None, description="lane this line belongs to, if one")
    approach: str | None = None
    positive: str | None = Field(
        None,
        description="name of the direction from the left of p1->p2 to its right "
        "(for a line drawn left to right across the image: moving down the image)",
    )
    negative: str | None = Field(None, description="name of the opposite direction")

    @field_validator("points")
    @classmethod
    def _distinct(cls, value: tuple[Point2, Point2]) -> tuple[Point2, Point2]:
        if value[0] == value[1]:
            raise ValueError("a line needs two distinct points")
        return value


class Zone(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="zone id, unique in the scene")
    polygon: list[Point2] = Field(min_length=3, description="image polygon, pixels")
    kind: Literal["crosswalk", "waiting", "intersection", "no_stopping", "area"] = Field(
        "area",
        description="what the zone is for: crosswalk and waiting (pedestrians waiting to cross, "
        "a signal's pedestrian demand), intersection (the conflict area: vehicles stopped in "
        "it block the junction), no_stopping (vehicles stopped or parked there), area (any)",
    )
    approach: str | None = Field(None, description="approach the zone belongs to, if one")
    classes: list[RoadUserClass] = Field(
        default_factory=list, description="road-user classes counted in the zone; empty = all"
    )

    _simple = field_validator("polygon")(simple_polygon)


class SceneConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="scene name")
    description: str | None = None
    video: str | None = Field(None, description="clip replayed for this scene (data directory)")
    rsu_id: str | None = Field(None, description="RSU id used when replaying; default: name")
    camera_id: str = Field("cam0", description="camera id used when replaying")
    image_size: tuple[int, int] | None = Field(None, description="width, height of the camera")
    detector: dict[str, object] = Field(
        default_factory=dict, description="detector settings recommended for this camera"
    )
    calibration: Calibration | None = None
    lanes: list[Lane] = Field(default_factory=list)
    lines: list[CountingLine] = Field(default_factory=list, description="counting and stop lines")
    zones: list[Zone] = Field(
        default_factory=list, description="areas watched for presence and stopped road users"
    )

    @model_validator(mode="after")
    def _unique_lanes(self) -> SceneConfig:
        for what, ids in (
            ("lane", [lane.id for lane in self.lanes]),
            ("line", [line.id for line in self.lines]),
            ("zone", [zone.id for zone in self.zones]),
        ):
            if dupes := repeated(ids):
                raise ValueError(f"duplicate {what} ids: {dupes}")
        lane_ids = {lane.id for lane in self.lanes}
        for line in self.lines:
            if line.lane_id is not None and line.lane_id not in lane_ids:
                raise ValueError(f"line {line.id} names lane {line.lane_id!r}, not in lanes")
        if self.detector:
            DetectorConfig.model_validate(self.detector)
        return self


class SceneError(ValueError):
    pass


class GroundProjector:
    """Maps image points to ground metres with the scene's homography."""

    def __init__(self, calibration: Calibration) -> None:
        import cv2

        src = np.asarray(calibration.image_points, np.float64)
        dst = np.asarray(calibration.ground_points, np.float64)
        matrix, _ = cv2.findHomography(src, dst, 0)
        if matrix is None or abs(np.linalg.det(matrix)) < 1e-12:
            raise SceneError(
                "calibration is degenerate: the points give no invertible homography "
                "(are three or more of them on one line?)"
            )
        self.matrix = matrix
        self.origin = calibration.origin

    def to_geo(self, ground_xy: np.ndarray) -> np.ndarray | None:
        """(lat, lon) of ground points; None when the scene is not georeferenced.

        Local tangent plane (equirectangular) around the origin: over a camera's few hundred
        metres its error is far below a centimetre.
        """
        if self.origin is None:
            return None
        lat0 = np.radians(self.origin.lat)
        lat = self.origin.lat + np.degrees(ground_xy[:, 1] / EARTH_RADIUS_M)
        lon = self.origin.lon + np.degrees(ground_xy[:, 0] / (EARTH_RADIUS_M * np.cos(lat0)))
        return np.stack((lat, lon), axis=1)

    def to_ground(self, image_xy: np.ndarray) -> np.ndarray:
        if image_xy.shape[0] == 0:
            return np.zeros((0, 2))
        homogeneous = np.c_[image_xy, np.ones(len(image_xy))] @ self.matrix.T
        return homogeneous[:, :2] / homogeneous[:, 2:3]


class LaneMap:
    """Which lane (if any) each image point is in."""

    def __init__(self, lanes: list[Lane]) -> None:
        self.lanes = lanes
        self._tree = STRtree([Polygon(lane.polygon) for lane in lanes]) if lanes else None

    def assign(self, image_xy: np.ndarray) -> list[str | None]:
        result: list[str | None] = [None] * len(image_xy)
        if self._tree is None or len(image_xy) == 0:
            return result
        point_idx, lane_idx = self._tree.query(points(image_xy), predicate="within")
        # Overlapping lanes: the first listed wins, so visit hits in (point, lane) order.
        order = np.lexsort((lane_idx, point_idx))
        for p, g in zip(point_idx[order].tolist(), lane_idx[order].tolist(), strict=False):
            if result[p] is None:
                result[p] = self.lanes[g].id
        return result
