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
    canvas = cv2.addWeighted(overlay, 0.25, canvas, 0.75, 0)
    if scene.calibration is not None:
        projector = GroundProjector(scene.calibration)
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
