"""``rsu export``: turn Ultralytics weights into the model files RSUs run.

- ONNX (fp32) through Ultralytics' exporter, at a fixed input size.
- Static int8 ONNX through ONNX Runtime's quantizer, calibrated on letterboxed frames of a
  real clip of the camera's kind.  The detection head (the last module: box and class
  convolutions, DFL and the box decode) stays in float: quantizing it too destroys the
  output, since box coordinates in pixels and class scores near 0 share no useful int8 scale.
- Then the head's last convolutions get their biases corrected (Nagel et al., "Data-Free
  Quantization Through Weight Equalization and Bias Correction", 2019, done here with
  calibration frames): on those frames, int8 features shift each class logit and box
  logit by a mean amount, and at a fixed score threshold that shift drops (or adds)
  marginal detections.  On the intersection clip the int8 model found 2,366 boxes where
  fp32 found 2,558; corrected, 2,543 (BENCHMARKS.md).
- TensorRT engines through Ultralytics (``format=engine``; fp16 or int8), on the device
  that will run them: engines are specific to the GPU and TensorRT version.

Needs the ``models`` extra (Ultralytics, onnx); an RSU running the result needs only the
``rsu`` extra.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from rsu.detector import letterbox

HEAD_PREFIX = re.compile(r"^/model\.(\d+)/")
# The Detect head's last convolutions: box (cv2) and class (cv3) logits, one per scale.
HEAD_OUTPUT_CONV = re.compile(r"^/model\.\d+/(cv[23])\.\d+/cv[23]\.\d+\.2/Conv$")
# Class logits are corrected where fp32 sees something (sigmoid score above this): the
# mean over every anchor is background's, and shifting by it drops real detections.
CLASS_SCORE_FLOOR = 0.05


class ExportError(RuntimeError):
    pass


def export_ultralytics(
    weights: Path, out_dir: Path, fmt: str, imgsz: int | tuple[int, int], half: bool = False,
    int8: bool = False, calibration: Path | None = None,
) -> Path:  # fmt: skip
    """ONNX or TensorRT engine through Ultralytics; returns the written file.  ``imgsz``: a
    square side, or (height, width) for a camera's aspect (``rsu.model_fit.fitted_input``)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ExportError(
            "exporting needs the models extra: pip install 'v2x-citybrain[models]'"
        ) from None
    options: dict[str, object] = {"format": fmt, "imgsz": imgsz, "half": half}
    if fmt == "engine" and int8:
        if calibration is None:
            raise ExportError("an int8 engine needs --calibration (a dataset YAML)")
        options.update(int8=True, data=str(calibration))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Ultralytics writes next to the weights: work on a copy, never in the data directory.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / weights.name
        shutil.copy2(weights, copy)
        try:
            written = Path(YOLO(str(copy)).export(**options))
        except Exception as exc:  # Ultralytics raises many kinds; say what failed and why
            raise ExportError(
                f"Ultralytics could not export {weights.name} to {fmt}: {exc}"
            ) from None
        size = f"{imgsz[1]}x{imgsz[0]}" if isinstance(imgsz, tuple) else str(imgsz)
        target = out_dir / f"{weights.stem}-{size}{'-fp16' if half else ''}{written.suffix}"
        shutil.move(str(written), target)
    return target


def head_nodes(model_path: Path) -> list[str]:
    """Names of the nodes of the model's last module (the Detect head)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    modules = [int(m.group(1)) for n in graph.node if (m := HEAD_PREFIX.match(n.name))]
    if not modules:
        raise ExportError(f"{model_path.name} has no Ultralytics /model.N/ node names")
    head = f"/model.{max(modules)}/"
    return [n.name for n in graph.node if n.name.startswith(head)]


def calibration_frames(video: Path, count: int, input_hw: tuple[int, int]) -> Iterator[np.ndarray]:
    """``count`` frames spread evenly over the clip, letterboxed into the model's input
    (height, width) as the detector does."""
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if not capture.isOpened() or total <= 0:
        raise ExportError(f"cannot read calibration video {video}")
    wanted = set(np.linspace(0, total - 1, min(count, total)).astype(int).tolist())
    canvas = np.empty((*input_hw, 3), np.uint8)
    for index in range(total):
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            letterbox(image, canvas)
            yield cv2.dnn.blobFromImage(canvas, 1.0 / 255.0, swapRB=True)
    capture.release()


def quantize_int8(
    fp32_model: Path,
    out: Path,
    video: Path,
    frames: int = 64,
    method: str = "percentile",
    conv_only: bool = False,
    keep_float: tuple[str, ...] = (),
    correct_bias: bool = True,
) -> tuple[Path, list[str]]:
    """Static int8 (QDQ, per-channel weights) with the head in float, its last biases
    corrected (``correct_bias``); returns the nodes kept in float."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    session = ort.InferenceSession(str(fp32_model), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    blobs = list(calibration_frames(video, frames, (int(inp.shape[2]), int(inp.shape[3]))))
    if not blobs:
        raise ExportError(f"no calibration frames read from {video}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(blobs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            blob = next(self._it, None)
            return None if blob is None else {inp.name: blob}

    out.parent.mkdir(parents=True, exist_ok=True)
    prepared = out.with_suffix(".pre.onnx")
    # Static input shapes: ONNX shape inference suffices (symbolic inference needs sympy).
    quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
    excluded = head_nodes(prepared)
    if keep_float:
        import onnx

        names = [n.name for n in onnx.load(str(prepared)).graph.node]
        excluded += [n for n in names if n.startswith(keep_float) and n not in excluded]
    try:
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            op_types_to_quantize=["Conv"] if conv_only else None,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
            }[method],
        )
    finally:
        prepared.unlink(missing_ok=True)
    if correct_bias:
        correct_head_bias(fp32_model, out, [{inp.name: blob} for blob in blobs])
    _copy_metadata(fp32_model, out)
    return out, excluded


def correct_head_bias(fp32_model: Path, int8_model: Path, feeds: list[dict]) -> list[str]:
    """Shift the biases of the head's last (float) convolutions of ``int8_model`` so that on
    ``feeds`` their outputs match ``fp32_model``'s on average; returns the convs corrected
    (none for a model without an Ultralytics Detect head)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_model))
    convs = [
        n for n in model.graph.node
        if n.op_type == "Conv" and len(n.input) == 3 and HEAD_OUTPUT_CONV.match(n.name)
    ]  # fmt: skip
    if not convs:
        return []
    outputs = [c.output[0] for c in convs]
    reference = _run_with_outputs(onnx.load(str(fp32_model)), outputs, feeds)
    quantized = _run_with_outputs(model, outputs, feeds)
    biases = {i.name: i for i in model.graph.initializer}
    for conv, want, got in zip(convs, reference, quantized, strict=True):
        shift = got - want  # [frames, channels, h, w]
        if HEAD_OUTPUT_CONV.match(conv.name).group(1) == "cv3":  # type: ignore[union-attr]
            seen = 1.0 / (1.0 + np.exp(-want)) > CLASS_SCORE_FLOOR
            counts = seen.sum(axis=(0, 2, 3))
            delta = np.where(
                counts > 0, (shift * seen).sum(axis=(0, 2, 3)) / np.maximum(counts, 1), 0.0
            )
        else:
            delta = shift.mean(axis=(0, 2, 3))
        bias = biases.get(conv.input[2])
        if bias is None:
            raise ExportError(f"{conv.name}: its bias is not a constant; cannot correct it")
        value = numpy_helper.to_array(bias).astype(np.float32) - delta.astype(np.float32)
        bias.CopyFrom(numpy_helper.from_array(value, bias.name))
    onnx.save(model, str(int8_model))
    return [c.name for c in convs]


def _run_with_outputs(model, outputs: list[str], feeds: list[dict]) -> list[np.ndarray]:
    """``outputs`` (intermediate tensors of ``model``) on every feed, stacked per output."""
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the caller's model keeps its outputs
    model = copy
    for name in outputs:
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [session.run(outputs, feed) for feed in feeds]
    return [np.concatenate([run[k] for run in runs]) for k in range(len(outputs))]


def _copy_metadata(source: Path, target: Path) -> None:
    """Keep Ultralytics' metadata (class names, imgsz) that the detector reads."""
    import onnx

    src, dst = onnx.load(str(source)), onnx.load(str(target))
    present = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in present:
            dst.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(dst, str(target))
