"""RSU per-frame latency against Ultralytics' own model.track(), side by side in one run.

Both sides get the same decoded frames of the clip, the same weights (the .pt and its ONNX
export at the same imgsz), the same tracker algorithm (ByteTrack) and the same number of CPU
threads.  Our side is the whole RSU pipeline from a decoded frame to the message published
on a real Valkey server: letterbox, inference, decode and NMS, ByteTrack, scene analytics,
message encoding, and the hand-over to the RSU's sender thread, which makes the XADD (as an
RSU does: the camera loop never waits for the network).  ``to_bus_ack_*`` adds the wait
until Valkey acknowledged the XADD.  Our side runs once per runtime in ``--runtimes`` (ONNX Runtime,
OpenVINO; both fp32 unless ``--openvino-precision`` says otherwise); the headline figures
are the first runtime's, and ``by_runtime`` has each one's.  Ultralytics' side is
``model.track(persist=True, tracker="bytetrack.yaml")``.

Each side runs in its own worker process (PyTorch's and ONNX Runtime's thread pools spin
after work and would slow each other down in one process), and the runs alternate, ours then
theirs, for ``--rounds`` rounds, so that the noise of a shared machine hits both alike.  The
figures pool all rounds; ``speedup_by_round`` shows the spread.

Prints a table, then one JSON line (keys from issue #3).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    try:
        import openvino

        openvino_version: str | None = openvino.get_version()
    except ImportError:
        openvino_version = None
    info: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "openvino": openvino_version,
    }
    try:
        import torch
        import ultralytics

        info["torch"] = torch.__version__
        info["ultralytics"] = ultralytics.__version__
    except ImportError:
        pass
    return info


def load_frames(video: Path, n: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < n:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_ours(args: argparse.Namespace, frames: list[np.ndarray], runtime: str) -> dict[str, object]:
    import gc

    from rsu.publish_thread import favour_camera_loop

    with favour_camera_loop():  # as RSU processes run their camera loop
        if args.gc == "interpreter":
            gc.enable()  # collections wherever allocations trigger them, as before
        return _run_ours(args, frames, runtime)


def _run_ours(args: argparse.Namespace, frames: list[np.ndarray], runtime: str) -> dict:
    from common.datadir import resolve_asset
    from common.redis_server import LocalRedisServer
    from rsu.config import RsuConfig
    from rsu.detector import DetectorConfig, build_detector
    from rsu.pipeline import RsuPipeline, now_ms
    from rsu.publish_thread import BackgroundPublisher
    from rsu.publisher import BusPublisher
    from rsu.replay import load_scene
    from rsu.source import Frame
    from rsu.tracker import ByteTracker

    scene = load_scene(args.scene)
    onnx = resolve_asset(args.onnx or f"models/yolov8n-coco-{args.imgsz}.onnx")
    with LocalRedisServer() as server:
        config = RsuConfig(
            rsu_id="bench",
            detector=DetectorConfig(
                runtime=runtime,
                model=str(onnx),
                imgsz=args.imgsz,
                threads=args.threads,
                openvino_precision=args.openvino_precision,
            ),
            bus={"redis_url": server.url},
        )
        # As the RSU does (rsu.model_fit): the model runs at the frames' aspect, unless
        # --input square asks for the model's own square input.
        size = (frames[0].shape[1], frames[0].shape[0]) if args.input == "fitted" else None
        detector = build_detector(config.detector, onnx, config.tracker.low_threshold, size)
        publisher = BackgroundPublisher(BusPublisher(config.bus))  # as an RSU publishes

        def pipeline() -> RsuPipeline:
            tracker = ByteTracker(config.tracker, FPS)
            return RsuPipeline(config, detector, publisher, scene, tracker=tracker)

        warm = pipeline()
        for i, image in enumerate(frames[:10]):
            warm.process(Frame(i, image, 0.0), now_ms())
        publisher.flush(10.0)
        publisher.ack_ms.clear()
        ours = pipeline()
        objects = [
            len(ours.process(Frame(k, image, k * 1000 / FPS), now_ms()).objects)
            for k, image in enumerate(frames)
        ]
        if not publisher.flush(30.0):
            raise RuntimeError("the bench's messages did not all reach Valkey")
        publisher.close()
    return {
        "total": list(ours.timer.total),
        "ack": list(publisher.ack_ms),
        "stages": {k: list(v) for k, v in ours.timer.samples.items() if v},
        "objects": objects,
        "budget_ms": config.budget_ms,
        "gc_between_frames": list(ours.timer.between_frames),
        "input": f"{detector.input_hw[1]}x{detector.input_hw[0]}",
    }


def run_ultralytics(args: argparse.Namespace, frames: list[np.ndarray]) -> dict[str, object]:
    import torch
    from ultralytics import YOLO

    from common.datadir import resolve_asset

    torch.set_num_threads(args.threads)
    weights = str(resolve_asset(args.pt))
    options = {"imgsz": args.imgsz, "persist": True, "verbose": False, "tracker": "bytetrack.yaml"}
    warm = YOLO(weights)
    for image in frames[:10]:
        warm.track(image, **options)
    model = YOLO(weights)
    times, objects = [], []
    for image in frames:
        t0 = time.perf_counter()
        result = model.track(image, **options)
        times.append((time.perf_counter() - t0) * 1000)
        objects.append(len(result[0].boxes))
    return {"total": times, "objects": objects}


FPS = 30.0


def our_figures(runs: list[dict]) -> dict[str, object]:
    total = [t for r in runs for t in r["total"]]
    inference = [t for r in runs for t in r["stages"]["inference"]]
    overhead = [t - i for t, i in zip(total, inference, strict=True)]
    # decoded frame -> Valkey acknowledged the XADD (the sender thread's wait included)
    to_bus = [t + a for r in runs for t, a in zip(r["total"], r["ack"], strict=True)]
    return {
        "input": runs[0]["input"],
        "objects_per_frame": round(float(np.mean([n for r in runs for n in r["objects"]])), 1),
        "inference_p50_ms": round(percentile(inference, 50), 2),
        "pipeline_p50_ms": round(percentile(total, 50), 2),
        "pipeline_p99_ms": round(percentile(total, 99), 2),
        "overhead_p50_ms": round(percentile(overhead, 50), 2),
        "overhead_p99_ms": round(percentile(overhead, 99), 2),
        "to_bus_ack_p50_ms": round(percentile(to_bus, 50), 2),
        "to_bus_ack_p99_ms": round(percentile(to_bus, 99), 2),
        "budget_violations_share": round(
            sum(t > runs[0]["budget_ms"] for t in total) / len(total), 3
        ),
        # Collections run after a frame was sent (common/gc_policy.py): in no frame's time.
        "gc_between_frames_share": round(
            sum(len(r["gc_between_frames"]) for r in runs) / len(total), 3
        ),
        "gc_between_frames_max_ms": round(
            max((t for r in runs for t in r["gc_between_frames"]), default=0.0), 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scene", default=str(ROOT / "replay_data/intersection_beijing.yaml"))
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--onnx", help="ONNX model (default models/yolov8n-coco-<imgsz>.onnx)")
    parser.add_argument("--pt", default="models/yolov8n-coco.pt", help="Ultralytics weights")
    parser.add_argument("--frames", type=int, default=252)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--runtimes",
        default="onnxruntime,openvino",
        help="our detector runtimes, comma-separated; the first gives the headline figures",
    )
    parser.add_argument("--openvino-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--skip-ultralytics", action="store_true")
    parser.add_argument(
        "--gc",
        default="between-frames",
        help="garbage collection in our camera loop, comma-separated to compare: "
        "between-frames (as the RSU runs) or interpreter (automatic, inside frames)",
    )
    parser.add_argument(
        "--input",
        default="fitted",
        help="our model's input, comma-separated to compare: fitted (to the frames' aspect, "
        "as the RSU runs it and as Ultralytics does) or square (the ONNX file's own)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")

    if args.worker:
        from common.datadir import resolve_asset
        from rsu.replay import load_scene

        frames = load_frames(resolve_asset(load_scene(args.scene).video or ""), args.frames)
        if args.worker == "ultralytics":
            result = run_ultralytics(args, frames)
        else:
            result = run_ours(args, frames, args.worker)
        Path(args.out).write_bytes(orjson.dumps(result))
        return 0

    gc_modes, inputs = args.gc.split(","), args.input.split(",")
    # One of ours per runtime, garbage-collection mode and input; named by the runtime, and
    # by the mode and input where more than one is run.
    ours_sides = {
        ":".join(
            [runtime] + ([mode] if len(gc_modes) > 1 else []) + ([shape] if len(inputs) > 1 else [])
        ): (runtime, mode, shape)
        for runtime in args.runtimes.split(",")
        for mode in gc_modes
        for shape in inputs
    }
    runtimes = list(ours_sides)
    sides = runtimes if args.skip_ultralytics else [*runtimes, "ultralytics"]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for side in sides:
                out = Path(tmp) / f"{side}-{round_no}.json"
                worker, mode, shape = ours_sides.get(side, (side, gc_modes[0], inputs[0]))
                command = [
                    sys.executable, __file__, "--worker", worker, "--gc", mode, "--out", str(out),
                    "--input", shape,
                    "--scene", args.scene, "--imgsz", str(args.imgsz), "--pt", args.pt,
                    "--frames", str(args.frames), "--threads", str(args.threads),
                    "--openvino-precision", args.openvino_precision,
                ]  # fmt: skip
                if args.onnx:
                    command += ["--onnx", args.onnx]
                subprocess.run(command, check=True, cwd=ROOT)
                runs[side].append(orjson.loads(out.read_bytes()))

    by_runtime = {runtime: our_figures(runs[runtime]) for runtime in runtimes}
    ours = runs[runtimes[0]]
    figures: dict[str, object] = {
        "imgsz": args.imgsz,
        "frames": len(ours[0]["total"]),
        "rounds": args.rounds,
        "runtime": runtimes[0],
        **by_runtime[runtimes[0]],
    }
    if "ultralytics" in runs:
        theirs = runs["ultralytics"]
        ultra = [t for r in theirs for t in r["total"]]
        figures["ultralytics_p50_ms"] = round(percentile(ultra, 50), 2)
        figures["ultralytics_p99_ms"] = round(percentile(ultra, 99), 2)
        figures["ultralytics_objects_per_frame"] = round(
            float(np.mean([n for r in theirs for n in r["objects"]])), 1
        )
        for runtime in runtimes:
            total = [t for r in runs[runtime] for t in r["total"]]
            by_runtime[runtime]["speedup_vs_ultralytics"] = round(
                percentile(ultra, 50) / percentile(total, 50), 2
            )
            by_runtime[runtime]["speedup_by_round"] = [
                round(percentile(t["total"], 50) / percentile(o["total"], 50), 2)
                for o, t in zip(runs[runtime], theirs, strict=True)
            ]
        figures["speedup_vs_ultralytics"] = by_runtime[runtimes[0]]["speedup_vs_ultralytics"]
    if len(runtimes) > 1:
        figures["by_runtime"] = by_runtime
    figures["machine"] = machine_info()

    for runtime in runtimes:
        print(f"{runtime:<12}{'p50 ms':>9}{'p99 ms':>9}")
        for name in runs[runtime][0]["stages"]:
            values = [t for r in runs[runtime] for t in r["stages"][name]]
            print(f"  {name:<10}{percentile(values, 50):>9.2f}{percentile(values, 99):>9.2f}")
        mine = by_runtime[runtime]
        print(f"  {'pipeline':<10}{mine['pipeline_p50_ms']:>9.2f}{mine['pipeline_p99_ms']:>9.2f}")
    if "ultralytics" in runs:
        print(f"{'ultralytics':<12}{figures['ultralytics_p50_ms']:>9.2f}"
              f"{figures['ultralytics_p99_ms']:>9.2f}")  # fmt: skip
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
