"""``rsu scene check``: validate a scene against its camera frame and draw it for a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from shapely.geometry import Polygon, box

from common.datadir import resolve_asset
from rsu.scene import GroundProjector, SceneConfig
from rsu.source import VideoFileSource

LANE_COLOURS = [(0, 200, 255), (255, 160, 0), (0, 255, 120), (255, 0, 200), (120, 120, 255)]
ZONE_COLOUR = (255, 255, 255)
STOP_COLOUR = (0, 0, 255)
COUNT_COLOUR = (0, 255, 255)
GRID_COLOUR = (200, 200, 200)
GRID_STEPS_M = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass
class SceneReport:
    scene: str
    frame_size: tuple[int, int]
    lanes: int
    calibrated: bool
    warnings: list[str] = field(default_factory=list)
    image: str | None = None


def _label(canvas: np.ndarray, text: str, centre: tuple[int, int], colour, scale: float) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, _), _ = cv2.getTextSize(text, font, scale, 1)
    origin = (centre[0] - w // 2, centre[1])
    cv2.putText(canvas, text, origin, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, font, scale, colour, 1, cv2.LINE_AA)


def _hatch(overlay: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Diagonal hatching inside a polygon, so zones read apart from the filled lanes."""
    mask = np.zeros(overlay.shape[:2], np.uint8)
    cv2.fillPoly(mask, [pts], 255)
    stripes = np.zeros_like(mask)
    h, w = mask.shape
    for offset in range(-h, w, 8):
        cv2.line(stripes, (offset, 0), (offset + h, h), 255, 1)
    overlay[(mask > 0) & (stripes > 0)] = colour


def _draw_ground_grid(
    canvas: np.ndarray, scene: SceneConfig, projector: GroundProjector, report: SceneReport
) -> None:
    """A ground grid (1 to 100 m squares, by the scene's size) over the lanes, drawn back into
    the image.

    If the calibration is right, grid lines run along and across the lanes, and the squares
    shrink evenly with distance; a wrong point shows up as a sheared or bent grid.
    """
    outline = [p for lane in scene.lanes for p in lane.polygon] or [
        p for zone in scene.zones for p in zone.polygon
    ]
    if not outline:
        outline = list(scene.calibration.image_points) if scene.calibration else []
    ground = projector.to_ground(np.asarray(outline, np.float64))
    if not np.isfinite(ground).all() or np.abs(ground).max() > 5_000:
        report.warnings.append(
            "lanes reach the horizon or beyond: ground positions there are meaningless"
        )
        return
    inverse = np.linalg.inv(projector.matrix)
    (gx0, gy0), (gx1, gy1) = ground.min(axis=0), ground.max(axis=0)
    extent = max(gx1 - gx0, gy1 - gy0)
    step = next((s for s in GRID_STEPS_M if extent / s <= 25), GRID_STEPS_M[-1])
    xs = np.arange(np.floor(gx0 / step), np.ceil(gx1 / step) + 1) * step
    ys = np.arange(np.floor(gy0 / step), np.ceil(gy1 / step) + 1) * step
    _label(canvas, f"ground grid {step:g} m", (70, canvas.shape[0] - 8), GRID_COLOUR, 0.4)
    segments = [np.c_[np.full(50, x), np.linspace(ys[0], ys[-1], 50)] for x in xs]
    segments += [np.c_[np.linspace(xs[0], xs[-1], 50), np.full(50, y)] for y in ys]
    # Points in front of the camera share the sign of w with the calibration's own points.
    front = np.sign((np.r_[ground.mean(axis=0), 1.0] @ inverse.T)[2])
    for seg in segments:
        image = np.c_[seg, np.ones(len(seg))] @ inverse.T
        visible = np.sign(image[:, 2]) == front
        pts = image[visible, :2] / image[visible, 2:3]
        if len(pts) > 1:
            cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, GRID_COLOUR, 1,
                          cv2.LINE_AA)  # fmt: skip


def check_scene(scene: SceneConfig, frame: np.ndarray) -> tuple[SceneReport, np.ndarray]:
    height, width = frame.shape[:2]
    report = SceneReport(
        scene.name, (width, height), len(scene.lanes), scene.calibration is not None
    )
    if scene.image_size and tuple(scene.image_size) != (width, height):
        report.warnings.append(
            f"image_size {list(scene.image_size)} does not match the frame ({width}x{height})"
        )
    canvas = frame.copy()
    overlay = frame.copy()
    bounds = box(0, 0, width, height)
    polygons = {lane.id: Polygon(lane.polygon) for lane in scene.lanes}
    for i, lane in enumerate(scene.lanes):
        poly = polygons[lane.id]
        inside = poly.intersection(bounds).area / poly.area
        if inside < 0.999:
            report.warnings.append(f"lane {lane.id}: {100 * (1 - inside):.0f}% outside the frame")
        colour = LANE_COLOURS[i % len(LANE_COLOURS)]
        pts = np.round(np.asarray(lane.polygon)).astype(np.int32)
        cv2.fillPoly(overlay, [pts], colour)
        cv2.polylines(canvas, [pts], True, colour, 2, cv2.LINE_AA)
        cx, cy = (int(v) for v in poly.representative_point().coords[0])
        _label(canvas, lane.id, (cx, cy), colour, 0.5)
        if lane.approach or lane.direction:
            detail = " ".join(p for p in (lane.approach, lane.direction) if p)
            _label(canvas, detail, (cx, cy + 16), colour, 0.38)
    ids = list(polygons)
    for a_index, a in enumerate(ids):
        for b in ids[a_index + 1 :]:
            shared = polygons[a].intersection(polygons[b]).area
            if shared > 0.01 * min(polygons[a].area, polygons[b].area):
                report.warnings.append(f"lanes {a} and {b} overlap ({shared:.0f} px²)")
    for zone in scene.zones:
        poly = Polygon(zone.polygon)
        inside = poly.intersection(bounds).area / poly.area
        if inside < 0.999:
            report.warnings.append(f"zone {zone.id}: {100 * (1 - inside):.0f}% outside the frame")
        pts = np.round(np.asarray(zone.polygon)).astype(np.int32)
        _hatch(overlay, pts, ZONE_COLOUR)
        cv2.polylines(canvas, [pts], True, ZONE_COLOUR, 1, cv2.LINE_AA)
        cx, cy = (int(v) for v in poly.representative_point().coords[0])
        _label(canvas, f"{zone.id} ({zone.kind})", (cx, cy), ZONE_COLOUR, 0.4)
    canvas = cv2.addWeighted(overlay, 0.25, canvas, 0.75, 0)
    for line in scene.lines:
        (x1, y1), (x2, y2) = line.points
        for x, y in line.points:
            if not (0 <= x <= width and 0 <= y <= height):
                report.warnings.append(f"line {line.id}: point ({x:g}, {y:g}) is outside the frame")
        colour = STOP_COLOUR if line.kind == "stop" else COUNT_COLOUR
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.line(canvas, p1, p2, colour, 2, cv2.LINE_AA)
        # The positive direction: from the left of p1->p2 to its right (image y grows down).
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        length = float(np.hypot(x2 - x1, y2 - y1))
        nx, ny = -(y2 - y1) / length, (x2 - x1) / length
        tip = (int(mx + 18 * nx), int(my + 18 * ny))
        cv2.arrowedLine(canvas, (int(mx), int(my)), tip, colour, 2, cv2.LINE_AA, tipLength=0.4)
        # The id near p1, on the negative side; the arrow shows the positive direction.
        at = (int(x1 + 0.15 * (x2 - x1) - 12 * nx), int(y1 + 0.15 * (y2 - y1) - 12 * ny))
        _label(canvas, f"{line.id} (+ arrow)", at, colour, 0.4)
    if scene.calibration is not None:
        projector = GroundProjector(scene.calibration)
        _draw_ground_grid(canvas, scene, projector, report)
        ground = projector.to_ground(np.asarray(scene.calibration.image_points, np.float64))
        error = np.abs(ground - np.asarray(scene.calibration.ground_points)).max()
        if error > 0.5:
            report.warnings.append(f"calibration reprojects its own points {error:.2f} m off")
        for (x, y), (gx, gy) in zip(
            scene.calibration.image_points, scene.calibration.ground_points, strict=True
        ):
            cv2.drawMarker(canvas, (int(x), int(y)), (0, 0, 255), cv2.MARKER_CROSS, 14, 2)
            cv2.putText(canvas, f"({gx:g},{gy:g}) m", (int(x) + 6, int(y) - 6),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)  # fmt: skip
    return report, canvas


def run_scene_check(
    scene: SceneConfig, out: Path, frame_index: int = 0, data_dir: str | None = None
) -> SceneReport:
    if not scene.video:
        raise ValueError(f"scene {scene.name} names no video to draw on")
    source = VideoFileSource(resolve_asset(scene.video, data_dir), max_frames=frame_index + 1)
    try:
        frame = next((f for f in source if f.index == frame_index), None)
    finally:
        source.close()
    if frame is None:
        raise ValueError(f"the clip has no frame {frame_index}")
    report, canvas = check_scene(scene, frame.image)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        raise OSError(f"cannot write {out}")
    report.image = str(out)
    return report
