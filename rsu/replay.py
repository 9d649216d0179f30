"""Replaying a recorded clip through the same RSU pipeline a live camera uses.

Capture timestamps are the replay's start time plus the frame's media time, so the center
bins a replay as if the clip were live now.  ``realtime`` paces frames at the clip's frame
rate; otherwise frames are processed as fast as the detector allows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import ConfigError, deep_merge, load_config, read_yaml, validate_config
from common.datadir import resolve_asset
from rsu.annotate import Annotator
from rsu.components import detector_for, publisher_for, spool_path_for, tracker_for
from rsu.config import RsuConfig
from rsu.pipeline import RsuPipeline, now_ms
from rsu.publish_thread import favour_camera_loop
from rsu.report import write_report
from rsu.scene import SceneConfig
from rsu.source import VideoFileSource


@dataclass
class ReplaySummary:
    scene: str
    rsu_id: str
    camera_id: str
    run_id: str
    video: str
    model: str
    imgsz: int
    input: str  # the model input it ran at, width x height
    frames: int
    messages: int
    detections: dict[str, int]
    latency: dict[str, dict[str, float]]
    budget_ms: float
    budget_violations: int
    wall_s: float
    first_frame_objects: int = 0
    reconnects: int = 0
    still_spooled: int = 0
    frames_skipped: int = 0  # frames that failed to decode
    source_error: str | None = None
    spool_path: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "rsu_id": self.rsu_id,
            "camera_id": self.camera_id,
            "run_id": self.run_id,
            "video": self.video,
            "model": self.model,
            "imgsz": self.imgsz,
            "input": self.input,
            "frames": self.frames,
            "messages": self.messages,
            "detections": self.detections,
            "first_frame_objects": self.first_frame_objects,
            "pipeline_p50_ms": round(self.latency["pipeline"]["p50_ms"], 2),
            "pipeline_p99_ms": round(self.latency["pipeline"]["p99_ms"], 2),
            "stages": {
                k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in self.latency.items()
            },
            "budget_ms": self.budget_ms,
            "budget_violations": self.budget_violations,
            "fps": round(self.frames / self.wall_s, 2) if self.wall_s else 0.0,
            "frames_skipped": self.frames_skipped,
            "reconnects": self.reconnects,
            "still_spooled": self.still_spooled,
        }


def load_scene(path: str | Path) -> SceneConfig:
    return load_config(SceneConfig, path)


def replay_config(
    scene: SceneConfig, config_path: str | Path | None, overrides: dict[str, Any]
) -> RsuConfig:
    """RSU config for a replay: scene defaults, then the config file, then CLI overrides."""
    data: dict[str, Any] = {
        "rsu_id": scene.rsu_id or scene.name,
        "camera_id": scene.camera_id,
        "detector": dict(scene.detector),
    }
    source = "scene defaults"
    if config_path:
        file_data = read_yaml(config_path)
        if not isinstance(file_data, dict):
            raise ConfigError(f"invalid config {config_path}: top level must be a mapping")
        data = deep_merge(data, file_data)
        source = str(config_path)
    data = deep_merge(data, overrides)
    return validate_config(RsuConfig, data, source)


@favour_camera_loop()
def run_replay(
    scene_path: str | Path,
    *,
    config_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    video: str | None = None,
    realtime: bool = False,
    max_frames: int | None = None,
    stride: int = 1,
    progress: bool = True,
    flush_timeout_s: float = 30.0,
    annotate: Path | None = None,
    report: Path | None = None,
) -> ReplaySummary:
    scene = load_scene(scene_path)
    config = replay_config(scene, config_path, overrides or {})
    clip = video or scene.video
    if not clip:
        raise ConfigError(f"scene {scene_path} names no video; pass --video")
    video_path = resolve_asset(clip, config.data_dir)
    source = VideoFileSource(video_path, stride=stride, max_frames=max_frames)
    detector = detector_for(config, (source.width, source.height))
    publisher = publisher_for(config)
    publisher.check()
    publisher.flush(timeout_s=flush_timeout_s)  # what an earlier run left spooled goes first
    tracker = tracker_for(config, source.fps / stride)
    pipeline = RsuPipeline(config, detector, publisher, scene, tracker=tracker, source=source)
    annotator = (
        Annotator(annotate, source.fps / stride, (source.width, source.height), scene)
        if annotate
        else None
    )

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.expected_frames or None, unit="frame", desc=f"replay {scene.name}")
    first_objects = 0
    samples: list[tuple[float, Counter[str]]] = []
    started_wall = time.monotonic()
    start_ms = now_ms()
    try:
        frames = iter(source)
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            decode_ms = (time.perf_counter() - t0) * 1000.0
            if frame is None:
                break
            if realtime:
                due = started_wall + frame.offset_ms / 1000.0
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            message = pipeline.process(frame, start_ms + int(frame.offset_ms), decode_ms)
            if annotator is not None:
                annotator.draw(frame.image, message, pipeline.analytics.lines.totals)
            if report is not None:
                samples.append(
                    (frame.offset_ms / 1000.0, Counter(o.category.value for o in message.objects))
                )
            if message.seq == 0:
                first_objects = len(message.objects)
            if bar is not None:
                bar.update(1)
        pipeline.finish(detail="replay finished", frame_ms=1000.0 * stride / source.fps)
        publisher.flush(timeout_s=flush_timeout_s)
        still_spooled = publisher.spool_depth
    finally:
        if bar is not None:
            bar.close()
        if annotator is not None:
            annotator.close()
        source.close()
        publisher.close()
    summary = ReplaySummary(
        scene=scene.name,
        rsu_id=config.rsu_id,
        camera_id=config.camera_id,
        run_id=pipeline.run_id,
        video=str(video_path),
        model=str(detector.model_path),
        imgsz=detector.imgsz,
        input=f"{detector.input_hw[1]}x{detector.input_hw[0]}",
        frames=pipeline.frames,
        messages=publisher.published,
        detections=dict(sorted(pipeline.class_totals.items())),
        latency=pipeline.timer.summary(),
        budget_ms=config.budget_ms,
        budget_violations=pipeline.budget_violations,
        wall_s=time.monotonic() - started_wall,
        first_frame_objects=first_objects,
        reconnects=publisher.reconnects,
        still_spooled=still_spooled,
        frames_skipped=source.frames_skipped,
        source_error=source.last_error,
        spool_path=str(spool_path_for(config)),
    )
    if report is not None:
        write_report(report, summary.as_json(), samples, pipeline.analytics.lines.totals)
    return summary


def format_summary(summary: ReplaySummary) -> str:
    data = summary.as_json()
    lines = [
        f"replayed {summary.scene}: {summary.frames} frames, {summary.messages} messages "
        f"to the bus as {summary.rsu_id}/{summary.camera_id} (run {summary.run_id})",
        f"  model {Path(summary.model).name} at imgsz {summary.imgsz} (input {summary.input}); "
        f"{data['fps']} frames/s",
        "  detections per class: "
        + (", ".join(f"{k} {v}" for k, v in summary.detections.items()) or "none"),
        f"  per-frame latency (decoded frame -> published): p50 {data['pipeline_p50_ms']} ms, "
        f"p99 {data['pipeline_p99_ms']} ms; over the {summary.budget_ms:g} ms budget: "
        f"{summary.budget_violations} of {summary.frames} frames",
        "  stages p50/p99 ms: "
        + ", ".join(
            f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}"
            for k, v in summary.latency.items()
            if k != "pipeline"
        ),
    ]
    if summary.frames_skipped:
        lines.append(
            f"  WARNING: {summary.frames_skipped} frames failed to decode and were skipped"
            + (f" ({summary.source_error})" if summary.source_error else "")
        )
    if summary.reconnects:
        lines.append(
            f"  the bus dropped out {summary.reconnects} time(s); spooled messages re-sent"
        )
    if summary.still_spooled:
        lines.append(
            f"  WARNING: {summary.still_spooled} messages could not be sent and wait in "
            f"{summary.spool_path}; the next run re-sends them"
        )
    return "\n".join(lines)
