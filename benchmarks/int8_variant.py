"""Static-int8 ONNX (and OpenVINO's fp32/bf16/int8) against fp32: inference time and the share
of fp32 detections kept.

Quantizes the fp32 model with ``rsu export``'s quantizer (head in float, calibrated on
``--calib-frames`` frames of the clip, the head's last biases corrected; and once more
without that correction, for comparison), then on every frame of the clip runs both models
through the RSU detector (same letterbox, thresholds and NMS).  Inference is timed in
alternating blocks in one process, so machine noise hits both alike.  A fp32 detection is
kept when the int8 model has a box of the same class with IoU >= 0.5 (greedy, per frame).
With the openvino extra installed, the same comparison covers OpenVINO running the fp32 model
in fp32 and in bf16, and the int8 model; the reference is always ONNX Runtime's fp32.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from rsu_latency import load_frames, machine_info, percentile  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scene", default=str(ROOT / "replay_data/intersection_beijing.yaml"))
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--onnx", help="fp32 model (default models/yolov8n-coco-<imgsz>.onnx)")
    parser.add_argument("--int8", help="int8 model; default: quantize the fp32 one now")
    parser.add_argument("--calib-frames", type=int, default=64)
    parser.add_argument("--frames", type=int, default=252)
    parser.add_argument("--block", type=int, default=21)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from common.datadir import resolve_asset
    from rsu.detector import DetectorConfig, OnnxDetector, OpenVinoDetector
    from rsu.evaluation import kept_share
    from rsu.export import quantize_int8
    from rsu.replay import load_scene

    video = resolve_asset(load_scene(args.scene).video or "")
    fp32 = resolve_asset(args.onnx or f"models/yolov8n-coco-{args.imgsz}.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        uncorrected = None
        if args.int8:
            int8 = resolve_asset(args.int8)
        else:
            int8, _ = quantize_int8(fp32, Path(tmp) / "int8.onnx", video, args.calib_frames)
            # The same quantization without the head's bias correction, for comparison.
            uncorrected, _ = quantize_int8(
                fp32, Path(tmp) / "raw.onnx", video, args.calib_frames, correct_bias=False
            )
        config = DetectorConfig(model="-", imgsz=args.imgsz, threads=args.threads)
        detectors = {"fp32": OnnxDetector(config, fp32), "int8": OnnxDetector(config, int8)}
        if uncorrected is not None:
            detectors["int8_uncorrected"] = OnnxDetector(config, uncorrected)
        try:
            import openvino  # noqa: F401

            bf16 = config.model_copy(update={"openvino_precision": "bf16"})
            detectors["openvino_fp32"] = OpenVinoDetector(config, fp32)
            detectors["openvino_bf16"] = OpenVinoDetector(bf16, fp32)
            detectors["openvino_int8"] = OpenVinoDetector(config, int8)
        except ImportError:
            pass
        frames = load_frames(video, args.frames)
        for det in detectors.values():  # warm-up
            for image in frames[:5]:
                det.detect(image)
        times: dict[str, list[float]] = {k: [] for k in detectors}
        found: dict[str, list] = {k: [] for k in detectors}
        for start in range(0, len(frames), args.block):
            for name, det in detectors.items():
                for k in range(start, min(start + args.block, len(frames))):
                    blob, box = det.preprocess(frames[k])  # each runtime its own input
                    t0 = time.perf_counter()
                    output = det.infer(blob)
                    times[name].append((time.perf_counter() - t0) * 1000)
                    found[name].append(det.postprocess(output, box, frames[k].shape))
    kept, total, int8_total = kept_share(found["fp32"], found["int8"])
    figures = {
        "imgsz": args.imgsz,
        "frames": len(frames),
        "fp32_inference_p50_ms": round(percentile(times["fp32"], 50), 2),
        "int8_inference_p50_ms": round(percentile(times["int8"], 50), 2),
        "int8_speedup": round(percentile(times["fp32"], 50) / percentile(times["int8"], 50), 2),
        "fp32_detections": total,
        "int8_detections": sum(len(d) for d in found["int8"]),
        "detections_kept_share": round(kept / total, 3) if total else None,
        # the other side: int8 boxes that match a fp32 box (adding boxes raises the kept
        # share and lowers this one)
        "int8_detections_matched_share": round(kept / int8_total, 3) if int8_total else None,
        "calibration_frames": args.calib_frames,
    }
    if "int8_uncorrected" in found:
        kept_raw, _, raw_total = kept_share(found["fp32"], found["int8_uncorrected"])
        figures["int8_uncorrected_detections"] = raw_total
        figures["int8_uncorrected_kept_share"] = round(kept_raw / total, 3) if total else None
        figures["int8_uncorrected_matched_share"] = (
            round(kept_raw / raw_total, 3) if raw_total else None
        )
    for name in [n for n in detectors if n.startswith("openvino")]:
        kept_here, _, _ = kept_share(found["fp32"], found[name])
        figures[f"{name}_inference_p50_ms"] = round(percentile(times[name], 50), 2)
        figures[f"{name}_speedup"] = round(
            percentile(times["fp32"], 50) / percentile(times[name], 50), 2
        )
        figures[f"{name}_detections"] = sum(len(d) for d in found[name])
        figures[f"{name}_kept_share"] = round(kept_here / total, 3) if total else None
    figures["machine"] = machine_info()
    print(f"{'model':<14}{'p50 ms':>9}{'p99 ms':>9}{'boxes':>8}")
    for name in detectors:
        print(f"{name:<14}{percentile(times[name], 50):>9.2f}{percentile(times[name], 99):>9.2f}"
              f"{sum(len(d) for d in found[name]):>8}")  # fmt: skip
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
