"""YOLO detection runtimes: letterbox, inference, vectorised decode and NMS.

Works with Ultralytics detection exports (output ``1 x (4 + C) x A``: cx, cy, w, h and C class
scores, no NMS in the graph), run by ONNX Runtime or OpenVINO, and with Ultralytics' own
runtime.  Only the road-user classes asked for are decoded.  Given the camera's frame size, a
square ONNX export runs at the frames' aspect (``rsu.model_fit``), as Ultralytics' own
runtime does.
"""

from __future__ import annotations

import ast
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from common.config import StrictModel
from common.schemas import RoadUserClass
from rsu.detections import Detections
from rsu.model_fit import ModelFitError, cached_fit, fitted_input, square_input

log = logging.getLogger("rsu.detector")

COCO_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "truck": 7}
LETTERBOX_FILL = 114


class DetectorConfig(StrictModel):
    runtime: Literal["onnxruntime", "openvino", "ultralytics"] = Field(
        "onnxruntime",
        description="onnxruntime (.onnx; CPU, CUDA, TensorRT providers), openvino (.onnx on "
        "x86 CPUs and Intel GPUs; needs the openvino extra) or ultralytics (.pt, or a TensorRT "
        ".engine built on this device; needs the models extra)",
    )
    model: str = Field(
        "models/yolov8n-coco-320.onnx",
        description="model file; relative paths are looked up in the data directories",
    )
    imgsz: int | None = Field(None, gt=0, description="input size; default: the model's own")
    confidence: float = Field(0.25, ge=0.0, le=1.0, description="minimum class score")
    class_confidence: dict[RoadUserClass, float] = Field(
        default_factory=dict, description="per-class minimum score, overriding `confidence`"
    )
    iou: float = Field(0.7, gt=0.0, le=1.0, description="NMS IoU threshold (per class group)")
    nms_groups: list[list[RoadUserClass]] = Field(
        default_factory=lambda: [[RoadUserClass.car, RoadUserClass.bus, RoadUserClass.truck]],
        description="classes suppressed against each other in NMS: one vehicle is often "
        "scored as both car and truck. Classes in no group are suppressed only within the class",
    )
    max_detections: int = Field(300, gt=0, description="most boxes kept per frame")
    fit_to_frame: bool = Field(
        True,
        description="run a square ONNX detection export at the camera's aspect, padded only "
        "to the model's stride (320x192 for 16:9 frames at imgsz 320): the same scale for "
        "about a third less inference. Models that are not Ultralytics detection exports "
        "run as they are",
    )
    tiles: str | None = Field(
        None,
        pattern=r"^[1-9]x[1-9]$",
        description="tiled inference for far or small road users: COLSxROWS overlapping crops "
        "plus the whole frame, e.g. 2x2 (costs one inference per crop; see BENCHMARKS.md)",
    )
    tile_overlap: float = Field(0.2, ge=0.0, lt=0.9, description="overlap between crops")
    classes: list[RoadUserClass] = Field(
        default_factory=lambda: list(RoadUserClass), description="road-user classes to keep"
    )
    threads: int = Field(0, ge=0, description="inference threads; 0 = one per core")
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["cpu"],
        description="ONNX Runtime execution providers, in order of preference. On Jetson: "
        "[tensorrt, cuda, cpu]. Ones this onnxruntime build lacks are skipped, with a warning",
    )
    fp16: bool = Field(False, description="TensorRT: build the engine in fp16")
    openvino_device: str = Field("CPU", description="OpenVINO: device to run on (CPU, GPU, AUTO)")
    openvino_precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="OpenVINO: arithmetic precision. fp32 matches the exported model; bf16 "
        "(CPUs with AVX512-BF16 or AMX) and fp16 (GPUs) are faster but move scores slightly, "
        "so measure the detections kept (benchmarks/rsu_latency.py) before deploying them",
    )
    engine_cache: str = Field(
        "~/.cache/v2x-citybrain/trt-engines",
        description="TensorRT: where engines built on first start are kept (per device)",
    )


class ModelError(RuntimeError):
    pass


_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def session_providers(
    config: DetectorConfig, available: list[str]
) -> list[str | tuple[str, dict[str, object]]]:
    """The requested providers this build has, with their options; CPU is always last."""
    chosen: list[str | tuple[str, dict[str, object]]] = []
    for name in config.providers:
        provider = _PROVIDER_NAMES[name]
        if provider not in available:
            log.warning("execution provider %s is not in this onnxruntime build; skipped", name)
            continue
        if name == "tensorrt":
            cache = Path(config.engine_cache).expanduser()
            cache.mkdir(parents=True, exist_ok=True)
            chosen.append(
                (provider, {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True,
                    "trt_fp16_enable": config.fp16,
                })
            )  # fmt: skip
        else:
            chosen.append(provider)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass(frozen=True)
class Letterbox:
    scale: float
    pad_x: int
    pad_y: int


def letterbox(
    image: np.ndarray, out: np.ndarray, padded_for: list[object] | None = None
) -> Letterbox:
    """Resize keeping aspect ratio into ``out`` (the model's input, H x W x 3), centred and
    padded grey.

    ``padded_for``: a one-element memo of the image shape ``out``'s padding was last
    painted for; a camera's frames all have one shape, so the padding is painted once and
    each frame only writes its resized pixels (directly, when they are one block of rows)."""
    h, w = image.shape[:2]
    out_h, out_w = out.shape[:2]
    scale = min(out_h / h, out_w / w)
    nw, nh = min(out_w, round(w * scale)), min(out_h, round(h * scale))
    pad_x, pad_y = (out_w - nw) // 2, (out_h - nh) // 2
    if padded_for is None or padded_for[0] != image.shape:
        out[:] = LETTERBOX_FILL
        if padded_for is not None:
            padded_for[0] = image.shape
    target = out[pad_y : pad_y + nh, pad_x : pad_x + nw]
    if target.flags.c_contiguous:
        cv2.resize(image, (nw, nh), dst=target, interpolation=cv2.INTER_LINEAR)
    else:
        target[:] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return Letterbox(scale, pad_x, pad_y)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou: float
) -> np.ndarray:
    """NMS within each group (OpenCV's C++ NMS); kept indices in descending score order."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), axis=1).astype(np.float64)
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), scores.astype(np.float64).tolist(), groups.tolist(), 0.0, iou
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Single-group NMS; kept indices in descending score order."""
    return batched_nms(boxes, scores, np.zeros(len(boxes), np.int64), iou)


def _model_class_ids(metadata: dict[str, str]) -> dict[str, int]:
    names = metadata.get("names")
    if not names:
        return dict(COCO_IDS)
    try:
        parsed = ast.literal_eval(names)
    except (ValueError, SyntaxError):
        return dict(COCO_IDS)
    return {str(v): int(k) for k, v in parsed.items()}


class Detector:
    """What every runtime shares: the classes kept, their thresholds and NMS groups.

    ``score_floor``: also decode boxes down to this score (a tracker's low band).
    """

    imgsz: int  # the long side of the model's input
    input_hw: tuple[int, int]  # the model's input (height, width)

    def __init__(self, config: DetectorConfig, model_path: Path, score_floor: float | None) -> None:
        self.config = config
        self.model_path = model_path
        self.class_names = np.array([c.value for c in config.classes], dtype=object)
        group_of = {c: i for i, group in enumerate(config.nms_groups) for c in group}
        self.nms_group = np.array(
            [group_of.get(c, len(config.nms_groups) + k) for k, c in enumerate(config.classes)],
            dtype=np.int64,
        )
        self.thresholds = np.array(
            [config.class_confidence.get(c, config.confidence) for c in config.classes],
            dtype=np.float32,
        )
        self._threshold_of = dict(zip(self.class_names.tolist(), self.thresholds, strict=True))
        self.decode_thresholds = (
            self.thresholds if score_floor is None else np.minimum(self.thresholds, score_floor)
        )
        self._lowest_threshold = float(self.decode_thresholds.min())

    def _check_classes(self, ids: dict[str, int], model_path: Path) -> None:
        missing = [c.value for c in self.config.classes if c.value not in ids]
        if missing:
            raise ModelError(f"model {model_path.name} has no class {missing}")

    def passes_confidence(self, detections: Detections) -> np.ndarray:
        """Which detections reach their class's confidence (not only the decode floor)."""
        if not len(detections):
            return np.zeros(0, bool)
        needed = np.array([self._threshold_of[c] for c in detections.class_name], np.float32)
        return detections.confidence >= needed

    def preprocess(self, image: np.ndarray) -> tuple[Any, Any]:
        raise NotImplementedError

    def infer(self, blob: Any) -> Any:
        raise NotImplementedError

    def postprocess(self, output: Any, box: Any, shape: tuple[int, ...]) -> Detections:
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> Detections:
        blob, box = self.preprocess(image)
        return self.postprocess(self.infer(blob), box, image.shape)

    def warmup(self) -> float:
        """One inference on a blank frame; returns its ms.  With TensorRT, this is when the
        engine is built (minutes on first start) or loaded from the engine cache."""
        start = time.perf_counter()
        self.detect(np.full((*self.input_hw, 3), LETTERBOX_FILL, np.uint8))
        return (time.perf_counter() - start) * 1000.0


class YoloExportDetector(Detector):
    """Letterbox, decode and NMS for Ultralytics detection exports; subclasses load and run."""

    def _configure(
        self, input_hw: tuple[int, int] | None, output_rows: int | None, metadata: dict[str, str]
    ) -> None:
        """``input_hw``: the model's fixed input (height, width), None if dynamic; its long
        side is the imgsz (a model fitted to the frame keeps the long side of its export)."""
        model_path, config = self.model_path, self.config
        own = max(input_hw) if input_hw else None
        self.imgsz = config.imgsz or own or 640
        if own is not None and config.imgsz not in (None, own):
            raise ModelError(
                f"{model_path.name} has a fixed input of {own}x{own}; "
                f"detector.imgsz={config.imgsz} does not match (export the model at that size)"
            )
        self.input_hw = input_hw or (self.imgsz, self.imgsz)
        ids = _model_class_ids(metadata)
        self._check_classes(ids, model_path)
        if output_rows is not None and output_rows - 4 <= max(ids.values()):
            raise ModelError(f"unexpected output of {output_rows} rows for a YOLO detection model")
        self.score_rows = np.array([4 + ids[c.value] for c in config.classes], dtype=np.int64)
        self._canvas = np.empty((*self.input_hw, 3), np.uint8)
        self._canvas_padded_for: list[object] = [None]

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        box = letterbox(image, self._canvas, self._canvas_padded_for)
        blob = cv2.dnn.blobFromImage(self._canvas, 1.0 / 255.0, swapRB=True)
        return blob, box

    def postprocess(self, output: np.ndarray, box: Letterbox, shape: tuple[int, ...]) -> Detections:
        pred = output[0]  # (4 + C, A)
        scores = pred[self.score_rows]  # (K, A) only the classes we keep
        # Most anchors score below every threshold: find the few that do not with one pass,
        # then pick classes among those only.
        top = scores.max(axis=0)
        candidates = np.flatnonzero(top >= self._lowest_threshold)
        if not len(candidates):
            return Detections.empty()
        best = scores[:, candidates].argmax(axis=0)
        conf = top[candidates]
        passed = conf >= self.decode_thresholds[best]
        candidates, best, conf = candidates[passed], best[passed], conf[passed]
        if not len(candidates):
            return Detections.empty()
        cx, cy, w, h = pred[:4, candidates]
        left, top, right, bottom = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        letterboxed = np.stack((left, top, right, bottom), axis=1)
        # Boxes straight into the frame's pixels: undo the letterbox, clip to the frame.
        height, width = shape[:2]
        x1 = np.clip((left - box.pad_x) / box.scale, 0, width)
        y1 = np.clip((top - box.pad_y) / box.scale, 0, height)
        x2 = np.clip((right - box.pad_x) / box.scale, 0, width)
        y2 = np.clip((bottom - box.pad_y) / box.scale, 0, height)
        groups = self.nms_group[best]
        keep = batched_nms(letterboxed, conf, groups, self.config.iou)[: self.config.max_detections]
        xyxy = np.stack((x1[keep], y1[keep], x2[keep], y2[keep]), axis=1)
        return Detections(
            xyxy=xyxy.astype(np.float32),
            confidence=conf[keep].astype(np.float32),
            class_name=self.class_names[best[keep]],
        )


class OnnxDetector(YoloExportDetector):
    """Ultralytics detection exports run by ONNX Runtime (CPU, CUDA or TensorRT providers)."""

    def __init__(
        self, config: DetectorConfig, model_path: Path, score_floor: float | None = None
    ) -> None:
        import onnxruntime as ort

        super().__init__(config, model_path, score_floor)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = config.threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        try:
            providers = session_providers(config, ort.get_available_providers())
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX model {model_path}: {exc}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        rows = self.session.get_outputs()[0].shape[1]
        height, width = inp.shape[2:4]
        self._configure(
            (height, width) if isinstance(height, int) and isinstance(width, int) else None,
            rows if isinstance(rows, int) else None,
            self.session.get_modelmeta().custom_metadata_map,
        )

    def infer(self, blob: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: blob})[0]


class OpenVinoDetector(YoloExportDetector):
    """Ultralytics ONNX exports run by OpenVINO.  In fp32 it gives ONNX Runtime's boxes at
    about its speed; with ``openvino_precision: bf16`` on CPUs with bf16 units it is about
    1.7x faster and keeps 99.3% of fp32's detections (BENCHMARKS.md); it can also use
    Intel GPUs."""

    _PRECISION: ClassVar[dict[str, str]] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

    def __init__(
        self, config: DetectorConfig, model_path: Path, score_floor: float | None = None
    ) -> None:
        super().__init__(config, model_path, score_floor)
        try:
            import openvino as ov
        except ImportError:
            raise ModelError(
                "the openvino runtime needs the openvino extra: "
                "pip install 'v2x-citybrain[openvino]'"
            ) from None
        properties: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": self._PRECISION[config.openvino_precision],
        }
        if config.threads:
            properties["INFERENCE_NUM_THREADS"] = config.threads
        try:
            core = ov.Core()
            model = core.read_model(str(model_path))
            in_shape = model.inputs[0].get_partial_shape()
            out_shape = model.outputs[0].get_partial_shape()
            compiled = core.compile_model(
                _with_uint8_bgr_input(model), config.openvino_device, properties
            )
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelError(f"cannot load {model_path} into OpenVINO: {exc}") from None
        self._request = compiled.create_infer_request()
        self._configure(
            (in_shape[2].get_length(), in_shape[3].get_length())
            if in_shape[2].is_static and in_shape[3].is_static
            else None,
            out_shape[1].get_length() if out_shape[1].is_static else None,
            _onnx_metadata(model_path),
        )

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        box = letterbox(image, self._canvas, self._canvas_padded_for)
        return self._canvas[None], box  # the model itself scales, swaps and transposes

    def infer(self, blob: np.ndarray) -> np.ndarray:
        self._request.infer({0: blob})
        # Copy: the tensor's memory is reused by the next inference.
        return self._request.get_output_tensor(0).data.copy()


def _with_uint8_bgr_input(model: Any) -> Any:
    """The model, taking the letterboxed uint8 BGR frame as it is (1 x H x W x 3).

    OpenVINO then does the /255, BGR->RGB and HWC->CHW inside the compiled graph, which saves
    about 0.7 ms a frame against cv2.dnn.blobFromImage plus a float input on this CPU.
    """
    from openvino import Layout, Type
    from openvino.preprocess import ColorFormat, PrePostProcessor

    steps = PrePostProcessor(model)
    tensor = steps.input().tensor()
    tensor.set_element_type(Type.u8).set_layout(Layout("NHWC")).set_color_format(ColorFormat.BGR)
    steps.input().model().set_layout(Layout("NCHW"))
    steps.input().preprocess().convert_element_type(Type.f32).convert_color(ColorFormat.RGB).scale(
        255.0
    )
    return steps.build()


def _onnx_metadata(model_path: Path) -> dict[str, str]:
    """The ONNX file's metadata_props (class names); OpenVINO does not expose them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception:  # not an ONNX file (an OpenVINO IR): fall back to COCO ids
        return {}
    return dict(session.get_modelmeta().custom_metadata_map)


class UltralyticsDetector(Detector):
    """Ultralytics' own runtime: a .pt checkpoint, or a TensorRT .engine exported on this
    device (``rsu export --format engine``).  Needs the ``models`` extra."""

    def __init__(
        self, config: DetectorConfig, model_path: Path, score_floor: float | None = None
    ) -> None:
        super().__init__(config, model_path, score_floor)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        try:
            from ultralytics import YOLO
        except ImportError:
            raise ModelError(
                "the ultralytics runtime needs the models extra: "
                "pip install 'v2x-citybrain[models]'"
            ) from None
        try:
            self.model = YOLO(str(model_path), task="detect")
        except Exception as exc:  # Ultralytics raises many kinds
            raise ModelError(f"cannot load {model_path}: {exc}") from None
        ids = {str(name): int(i) for i, name in self.model.names.items()}
        self._check_classes(ids, model_path)
        self.imgsz = config.imgsz or 640
        self.input_hw = (self.imgsz, self.imgsz)  # Ultralytics fits each frame itself
        self._coco_ids = [ids[c.value] for c in config.classes]
        self._row_of_id = {ids[c.value]: k for k, c in enumerate(config.classes)}

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, None]:
        return image, None  # Ultralytics letterboxes inside predict()

    def infer(self, blob: np.ndarray) -> Any:
        return self.model.predict(
            blob,
            imgsz=self.imgsz,
            conf=float(self.decode_thresholds.min()),
            iou=self.config.iou,
            classes=self._coco_ids,
            max_det=self.config.max_detections,
            verbose=False,
        )[0]

    def postprocess(self, output: Any, box: Any, shape: tuple[int, ...]) -> Detections:
        boxes = output.boxes
        if boxes is None or not len(boxes):
            return Detections.empty()
        xyxy = boxes.xyxy.cpu().numpy().astype(np.float32)
        conf = boxes.conf.cpu().numpy().astype(np.float32)
        rows = np.array([self._row_of_id[int(c)] for c in boxes.cls.cpu().numpy()], np.int64)
        keep = conf >= self.decode_thresholds[rows]
        xyxy, conf, rows = xyxy[keep], conf[keep], rows[keep]
        # Ultralytics' NMS is per class; ours also merges the classes of one NMS group.
        order = batched_nms(xyxy, conf, self.nms_group[rows], self.config.iou)
        return Detections(
            xyxy=xyxy[order], confidence=conf[order], class_name=self.class_names[rows[order]]
        )


RUNTIMES: dict[str, type[Detector]] = {
    "onnxruntime": OnnxDetector,
    "openvino": OpenVinoDetector,
    "ultralytics": UltralyticsDetector,
}


def build_detector(
    config: DetectorConfig,
    model_path: Path,
    score_floor: float | None = None,
    frame_size: tuple[int, int] | None = None,
) -> Detector:
    """Detector runtimes are plugins keyed by ``config.runtime``.

    ``frame_size`` (width, height of the camera's frames): with ``config.fit_to_frame``, a
    square ONNX detection export runs at the frames' aspect (``rsu.model_fit``)."""
    runtime = RUNTIMES[config.runtime]
    fit = _fitted_input(config, model_path, frame_size)
    if fit is None:
        return runtime(config, model_path, score_floor)
    height, width = fit
    try:
        fitted = cached_fit(model_path, height, width)
    except ModelFitError as exc:
        log.warning("%s runs at its square input: %s", model_path.name, exc)
        return runtime(config, model_path, score_floor)
    detector = runtime(config, fitted, score_floor)
    detector.model_path = model_path  # the file the config names
    log.info("%s runs at %dx%d for %s frames (%s)", model_path.name, width, height,
             "x".join(map(str, frame_size or ())), fitted)  # fmt: skip
    return detector


def _fitted_input(
    config: DetectorConfig, model_path: Path, frame_size: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The (height, width) to re-shape the model to, or None to run it as it is."""
    if (
        frame_size is None
        or not config.fit_to_frame
        or config.tiles  # crops have aspects of their own
        or config.runtime == "ultralytics"  # fits frames itself
        or model_path.suffix != ".onnx"
    ):
        return None
    side = square_input(model_path)
    if side is None:
        return None
    try:
        fit = fitted_input(side, *frame_size)
    except ModelFitError as exc:
        log.warning("%s runs at its square input: %s", model_path.name, exc)
        return None
    return None if fit == (side, side) else fit
