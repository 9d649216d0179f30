"""``rsu`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import orjson

from common.config import ConfigError
from common.datadir import AssetNotFoundError


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rsu.annotate import AnnotationError
    from rsu.detector import ModelError
    from rsu.publisher import PublishError
    from rsu.replay import format_summary, run_replay
    from rsu.source import SourceError

    overrides: dict[str, Any] = {}
    detector: dict[str, Any] = {}
    if args.model:
        detector["model"] = args.model
    if args.imgsz:
        detector["imgsz"] = args.imgsz
    if detector:
        overrides["detector"] = detector
    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    if redis_url:
        overrides["bus"] = {"redis_url": redis_url}
    for key in ("rsu_id", "camera_id", "data_dir"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    try:
        summary = run_replay(
            args.scene,
            config_path=args.config,
            overrides=overrides,
            video=args.video,
            realtime=args.realtime,
            max_frames=args.max_frames,
            stride=args.stride,
            progress=not args.no_progress and not args.json,
            annotate=Path(args.annotate) if args.annotate else None,
            report=Path(args.report) if args.report else None,
        )
    except (
        ConfigError, AssetNotFoundError, SourceError, ModelError, PublishError, AnnotationError
    ) as exc:  # fmt: skip
        print(f"rsu replay: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(summary.as_json()).decode() + "\n")
    else:
        print(format_summary(summary))
    return 0


def _scene_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rsu.replay import load_scene
    from rsu.scene import SceneError
    from rsu.scene_check import run_scene_check
    from rsu.source import SourceError

    try:
        scene = load_scene(args.scene)
        out = Path(args.out or f"out/scene-{scene.name}.png")
        report = run_scene_check(scene, out, args.frame, args.data_dir)
    except (ConfigError, AssetNotFoundError, SourceError, SceneError, ValueError, OSError) as exc:
        print(f"rsu scene check: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(report.__dict__).decode() + "\n")
    else:
        width, height = report.frame_size
        print(f"scene {report.scene}: {report.lanes} lanes on a {width}x{height} frame, "
              f"{'calibrated' if report.calibrated else 'no calibration'}")  # fmt: skip
        for warning in report.warnings:
            print(f"  warning: {warning}")
        print(f"  drawn to {report.image}")
    return 1 if report.warnings and args.strict else 0


def _run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from common.config import load_config
    from rsu.config import RsuConfig
    from rsu.detector import ModelError
    from rsu.live import run_live
    from rsu.scene import SceneError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {}
    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    if redis_url:
        overrides["bus"] = {"redis_url": redis_url}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        config = load_config(RsuConfig, args.config, overrides)
        pipeline = run_live(config, stop)
    except (ConfigError, AssetNotFoundError, ModelError, SceneError) as exc:
        print(f"rsu run: error: {exc}", file=sys.stderr)
        return 2
    print(f"stopped after {pipeline.frames} frames")
    return 0


def _check(args: argparse.Namespace) -> int:
    from common.config import load_config
    from rsu.config import RsuConfig
    from rsu.preflight import FAIL, format_checks, run_checks

    overrides = {}
    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    if redis_url:
        overrides["bus"] = {"redis_url": redis_url}
    try:
        config = load_config(RsuConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"rsu check: error: {exc}", file=sys.stderr)
        return 2
    checks = run_checks(config, camera_wait_s=args.camera_wait)
    if args.json:
        sys.stdout.write(orjson.dumps([c.__dict__ for c in checks]).decode() + "\n")
    else:
        print(format_checks(checks))
    return 1 if any(c.verdict == FAIL for c in checks) else 0


def _tiles(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--tiles takes COLSxROWS, e.g. 2x2; got {text!r}") from None
    return cols, rows


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rsu.detector import DetectorConfig, ModelError
    from rsu.groundtruth import GroundTruthError
    from rsu.model_eval import evaluate_model
    from rsu.replay import load_scene

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        config = DetectorConfig(model=args.model, imgsz=args.imgsz)
        scene = load_scene(args.scene) if args.scene else None
        figures = evaluate_model(
            Path(args.images), Path(args.gt), args.format, classes, config, args.data_dir,
            args.stride, _tiles(args.tiles), scene,
        )  # fmt: skip
    except (GroundTruthError, AssetNotFoundError, ModelError, ConfigError, ValueError) as exc:
        print(f"rsu eval: error: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{figures['model']} at imgsz {figures['imgsz']} on {figures['images']} images, "
              f"{figures['ms_per_image']} ms per image")  # fmt: skip
        print(f"  {'class':<12}{'AP50':>8}{'AP50-95':>9}{'P':>7}{'R':>7}{'boxes':>7}")
        for name, c in figures["classes"].items():
            print(f"  {name:<12}{c['ap50']:>8.3f}{c['ap50_95']:>9.3f}{c['precision']:>7.3f}"
                  f"{c['recall']:>7.3f}{c['gt']:>7}")  # fmt: skip
        for line_id, line in figures.get("counting", {}).get("lines", {}).items():
            for direction, c in line.items():
                print(f"  line {line_id} {direction}: ground truth {c['gt']}, RSU {c['rsu']}")
        if "count_error" in figures:
            print(f"  counting error {figures['count_error']}")
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.datadir import resolve_asset
    from rsu.export import ExportError, export_ultralytics, quantize_int8
    from rsu.model_fit import ModelFitError, fit_file, fitted_input, square_input

    try:
        weights = resolve_asset(args.weights, args.data_dir)
        out_dir = Path(args.out)
        # (height, width) at the camera's aspect, or the square side
        fit = fitted_input(args.imgsz, *args.frame_size) if args.frame_size else None
        size: int | tuple[int, int] = fit or args.imgsz
        if weights.suffix == ".onnx":
            fp32 = weights  # fit or quantize an existing export; no Ultralytics needed
            if fit is not None:
                side = square_input(weights)
                if side != args.imgsz:
                    raise ExportError(
                        f"{weights.name} has a square input of {side}: pass --imgsz {side}"
                        if side
                        else f"{weights.name} has no static square input to fit to the frames"
                    )
                if fit[0] != fit[1]:
                    stem = weights.stem.removesuffix(f"-{args.imgsz}")
                    fp32 = fit_file(weights, out_dir / f"{stem}-{fit[1]}x{fit[0]}.onnx", *fit)
                    print(f"wrote {fp32} (input {fit[1]}x{fit[0]})")
        elif args.format == "engine":
            calibration = Path(args.calibration) if args.calibration else None
            engine = export_ultralytics(
                weights, out_dir, "engine", size, args.half, args.int8, calibration
            )
            print(f"wrote {engine}")
            return 0
        else:
            fp32 = export_ultralytics(weights, out_dir, "onnx", size, args.half)
            print(f"wrote {fp32}")
        if args.int8:
            if not args.calib_video:
                raise ExportError("--int8 needs --calib-video: a clip from this kind of camera")
            video = resolve_asset(args.calib_video, args.data_dir)
            target = out_dir / f"{fp32.stem}-int8.onnx"
            keep = tuple(f"/model.{i}/" for i in args.keep_float)
            written, excluded = quantize_int8(
                fp32, target, video, args.calib_frames, args.calib_method, keep_float=keep
            )
            print(f"wrote {written} (static int8; {len(excluded)} head/kept nodes in float)")
    except (ExportError, AssetNotFoundError, ModelFitError) as exc:
        print(f"rsu export: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _frame_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 960x540; got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsu", description="Roadside unit: camera -> bus")
    sub = parser.add_subparsers(dest="command", required=True)

    replay = sub.add_parser("replay", help="replay a recorded clip through the RSU pipeline")
    replay.add_argument("--scene", required=True, help="scene file, e.g. replay_data/X.yaml")
    replay.add_argument("--config", help="RSU config YAML merged over the scene defaults")
    replay.add_argument("--video", help="clip to replay instead of the scene's own")
    replay.add_argument("--realtime", action="store_true", help="pace frames at the clip's fps")
    replay.add_argument("--redis-url", help="bus URL (default: $REDIS_URL, then the config)")
    replay.add_argument("--model", help="detector model file (data directory relative)")
    replay.add_argument("--imgsz", type=int, help="detector input size")
    replay.add_argument("--rsu-id", dest="rsu_id", help="RSU id to publish as")
    replay.add_argument("--camera-id", dest="camera_id", help="camera id to publish as")
    replay.add_argument("--data-dir", dest="data_dir", help="extra directory for models/videos")
    replay.add_argument("--max-frames", type=int, help="stop after this many frames")
    replay.add_argument("--stride", type=int, default=1, help="process every N-th frame")
    replay.add_argument("--annotate", help="also write an annotated mp4 here")
    replay.add_argument("--report", help="also write an HTML report (counts over time) here")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    replay.set_defaults(func=_replay)

    evaluate = sub.add_parser("eval", help="detection accuracy against annotated images")
    evaluate.add_argument(
        "--images", required=True, help="directory of the annotated images, or a video"
    )
    evaluate.add_argument("--gt", required=True, help="ground-truth file (masks: a folder)")
    evaluate.add_argument(
        "--format", choices=["coco", "mot", "detrac", "masks"], default="coco",
        help="coco: COCO JSON; mot: MOT gt.txt; detrac: UA-DETRAC XML; "
        "masks: CDnet gtNNNNNN.png (ROI.bmp, temporalROI.txt beside)",
    )  # fmt: skip
    evaluate.add_argument("--stride", type=int, default=1, help="masks: every N-th frame")
    evaluate.add_argument(
        "--tiles", help="tiled inference: COLSxROWS overlapping crops plus the full frame"
    )
    evaluate.add_argument(
        "--classes", default="vehicle",
        help="comma-separated classes; 'vehicle' merges car, motorcycle, bus and truck",
    )  # fmt: skip
    evaluate.add_argument("--model", default="models/yolov8n-coco-640.onnx")
    evaluate.add_argument("--imgsz", type=int, help="input size (default: the model's)")
    evaluate.add_argument("--data-dir", dest="data_dir", help="extra directory for models")
    evaluate.add_argument(
        "--scene",
        help="scene with counting lines: also measure the counting error (video ground truth)",
    )
    evaluate.add_argument("--json", action="store_true", help="only the JSON line")
    evaluate.set_defaults(func=_eval)

    run = sub.add_parser("run", help="run a live camera RSU until stopped")
    run.add_argument("--config", required=True, help="RSU config YAML with a `source`")
    run.add_argument("--redis-url", help="bus URL (default: $REDIS_URL, then the config)")
    run.set_defaults(func=_run)

    preflight = sub.add_parser(
        "check", help="before going live: scene, model, camera, bus and clock, each with a verdict"
    )
    preflight.add_argument("--config", required=True, help="the RSU's YAML config (as for rsu run)")
    preflight.add_argument("--redis-url", help="bus URL (default: $REDIS_URL, then the config)")
    preflight.add_argument(
        "--camera-wait", type=float, default=10.0, help="seconds to wait for a frame"
    )
    preflight.add_argument("--json", action="store_true", help="one JSON line of the checks")
    preflight.set_defaults(func=_check)

    export = sub.add_parser("export", help="export weights to ONNX, static int8 ONNX or TensorRT")
    export.add_argument("--weights", required=True, help=".pt to export, or a fp32 .onnx")
    export.add_argument("--imgsz", type=int, default=320, help="input size of the export")
    export.add_argument(
        "--frame-size",
        type=_frame_size,
        help="WxH of the camera's frames: the model's input takes their aspect, padded only "
        "to the stride (960x540 at imgsz 320: 320x192). With a square .onnx, it is re-shaped "
        "without Ultralytics. The RSU does this itself for square ONNX models (fit_to_frame); "
        "export it for TensorRT engines and int8 calibration at that input",
    )
    export.add_argument("--format", choices=["onnx", "engine"], default="onnx")
    export.add_argument("--half", action="store_true", help="fp16 (GPU runtimes)")
    export.add_argument("--int8", action="store_true", help="static int8 (head kept in float)")
    export.add_argument("--calib-video", help="clip whose frames calibrate int8 ONNX")
    export.add_argument("--calib-frames", type=int, default=64)
    export.add_argument(
        "--calib-method", choices=["percentile", "minmax", "entropy"], default="percentile"
    )
    export.add_argument(
        "--keep-float", type=int, nargs="*", default=[], help="more module numbers kept float"
    )
    export.add_argument("--calibration", help="engine int8: Ultralytics dataset YAML")
    export.add_argument("--data-dir", dest="data_dir", help="extra directory for inputs")
    export.add_argument("--out", default="out/models", help="directory to write to")
    export.set_defaults(func=_export)

    scene = sub.add_parser("scene", help="scene tools").add_subparsers(
        dest="scene_command", required=True
    )
    check = scene.add_parser("check", help="validate a scene and draw it over a frame (PNG)")
    check.add_argument("scene", help="scene file, e.g. replay_data/X.yaml")
    check.add_argument("--out", help="PNG to write (default out/scene-<name>.png)")
    check.add_argument("--frame", type=int, default=0, help="frame of the clip to draw on")
    check.add_argument("--data-dir", dest="data_dir", help="extra directory for videos")
    check.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    check.add_argument("--json", action="store_true", help="print the report as one JSON line")
    check.set_defaults(func=_scene_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
