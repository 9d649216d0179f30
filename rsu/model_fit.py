"""Run a square detection export at the camera's aspect instead of padding it square.

A 16:9 frame letterboxed into 320x320 is 44% grey padding, and the model convolves all of
it.  Ultralytics' own ``predict``/``track`` pad a frame only to the next multiple of the
model's stride (320x192 for 960x540 at imgsz 320), so the same frame costs it far less.
This module re-shapes an Ultralytics detection export (ONNX, static square input) to that
rectangle: the weights are untouched; only the input size and the constants the export
baked in for its size change (the anchor grid, the stride of each anchor, and the anchor
count in the head's reshapes).  The scale is the same, so it finds the same road users;
boxes scored near the threshold can tip either way, as the padding around the image changed
(94% of the square model's boxes kept on the intersection clip; BENCHMARKS.md, Run 7).

Anything that does not look exactly like such an export is refused with the reason, rather
than re-shaped into a model that silently computes garbage.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

STRIDES = (8, 16, 32)  # Ultralytics detection heads (P3-P5)


class ModelFitError(ValueError):
    """The model cannot be re-shaped; the message says why."""


def fitted_input(
    imgsz: int, frame_width: int, frame_height: int, stride: int = 32
) -> tuple[int, int]:
    """(height, width) of the model input for frames of this size at ``imgsz``: the frame
    scaled so its long side is ``imgsz``, each side padded up to a multiple of ``stride``
    (Ultralytics' rectangular letterbox)."""
    if imgsz <= 0 or imgsz % stride:
        raise ModelFitError(f"imgsz {imgsz} is not a positive multiple of the stride {stride}")
    if frame_width <= 0 or frame_height <= 0:
        raise ModelFitError(f"frame size {frame_width}x{frame_height} is not positive")
    scale = min(imgsz / frame_width, imgsz / frame_height)
    width, height = round(frame_width * scale), round(frame_height * scale)
    return (
        min(imgsz, math.ceil(height / stride) * stride),
        min(imgsz, math.ceil(width / stride) * stride),
    )


def anchor_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (2, A) in input pixels / stride and each anchor's stride (A,), in the
    order Ultralytics' ``make_anchors`` lays them out."""
    points, strides = [], []
    for s in STRIDES:
        h, w = height // s, width // s
        sy, sx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        points.append(np.stack((sx.ravel(), sy.ravel())))
        strides.append(np.full(h * w, float(s)))
    return np.concatenate(points, axis=1).astype(np.float32), np.concatenate(strides).astype(
        np.float32
    )


def fit_detection_onnx(model: Any, height: int, width: int) -> Any:
    """A copy of ``model`` (an ``onnx.ModelProto`` of an Ultralytics detection export with a
    static input) taking (1, 3, ``height``, ``width``).  Raises :class:`ModelFitError`."""
    import onnx
    from onnx import numpy_helper

    if height % STRIDES[-1] or width % STRIDES[-1] or height <= 0 or width <= 0:
        raise ModelFitError(f"input {width}x{height} is not a multiple of {STRIDES[-1]}")
    graph = model.graph
    initializer_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelFitError("not a detection export: expected one image input and one output")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) != 4 or None in shape or shape[:2] != [1, 3]:
        raise ModelFitError(f"input shape {shape} is not a static (1, 3, H, W)")
    old_h, old_w = shape[2], shape[3]
    old_points, old_strides = anchor_grid(old_h, old_w)
    new_points, new_strides = anchor_grid(height, width)
    old_count, new_count = old_points.shape[1], new_points.shape[1]
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if len(out_dims) != 3 or out_dims[2].dim_value != old_count:
        raise ModelFitError(
            f"output is not (1, 4 + classes, {old_count}) as a detection head at "
            f"{old_w}x{old_h} gives"
        )
    fitted = onnx.ModelProto()
    fitted.CopyFrom(model)
    graph = fitted.graph
    reshape_shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape"}
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            raise ModelFitError(f"{node.name} resizes to fixed sizes; only scales can be re-shaped")
    points = strides = counts = 0
    for tensor in graph.initializer:
        value = numpy_helper.to_array(tensor)
        per_anchor = value.dtype == np.float32 and value.shape[-1:] == (old_count,)
        if per_anchor and value.size == 2 * old_count:
            if not np.array_equal(value.reshape(2, old_count), old_points):
                raise ModelFitError(f"{tensor.name} has the anchor count but not the anchor grid")
            replacement = new_points.reshape(*value.shape[:-1], new_count)
            points += 1
        elif per_anchor and value.size == old_count:
            if not np.array_equal(value.ravel(), old_strides):
                raise ModelFitError(f"{tensor.name} has the anchor count but not the strides")
            replacement = new_strides.reshape(*value.shape[:-1], new_count)
            strides += 1
        elif tensor.name in reshape_shapes and value.dtype == np.int64 and old_count in value:
            replacement = np.where(value == old_count, new_count, value).astype(np.int64)
            counts += 1
        else:
            continue
        tensor.CopyFrom(numpy_helper.from_array(replacement, tensor.name))
    constants = [n.name for n in graph.node if n.op_type == "Constant"]
    if not points or strides != 1 or not counts:
        found = f"{points} anchor grid(s), {strides} stride table(s), {counts} reshape(s)"
        extra = f"; it has Constant nodes ({len(constants)})" if constants else ""
        raise ModelFitError(
            f"not an Ultralytics detection export this can re-shape: found {found}{extra}"
        )
    image = next(i for i in graph.input if i.name == inputs[0].name)
    image.type.tensor_type.shape.dim[2].dim_value = height
    image.type.tensor_type.shape.dim[3].dim_value = width
    graph.output[0].type.tensor_type.shape.dim[2].dim_value = new_count
    del graph.value_info[:]  # shapes inferred for the old size
    try:
        onnx.checker.check_model(fitted)
        onnx.shape_inference.infer_shapes(fitted, strict_mode=True)
    except Exception as exc:  # onnx raises several kinds
        raise ModelFitError(f"the re-shaped model does not check: {exc}") from None
    return fitted


def fit_file(source: Path, target: Path, height: int, width: int) -> Path:
    """Write ``source`` re-shaped to (``height``, ``width``) to ``target``."""
    import onnx

    try:
        model = onnx.load(str(source))
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise ModelFitError(f"cannot read {source} as ONNX: {exc}") from None
    fitted = fit_detection_onnx(model, height, width)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fitted, str(target))
    return target


def square_input(model_path: Path) -> int | None:
    """The side of ``model_path``'s input if it is a static square ONNX input, else None."""
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # not ONNX (an engine, an OpenVINO IR)
        return None
    names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in names]
    if len(inputs) != 1:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[2:]):
        return None
    h, w = dims[2].dim_value, dims[3].dim_value
    return h if h == w else None


def fitted_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "v2x-citybrain" / "fitted"


def cached_fit(source: Path, height: int, width: int, cache: Path | None = None) -> Path:
    """``source`` fitted to (``height``, ``width``), kept in ``cache`` (default
    :func:`fitted_cache_dir`) under a name from its content, so that a restart finds the same
    file: TensorRT's engine cache is keyed by the model it was built from.  Where the cache
    cannot be written (a read-only image), a temporary file."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    name = f"{source.stem}-{width}x{height}-{digest}.onnx"
    folder = cache or fitted_cache_dir()
    target = folder / name
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.{os.getpid()}"
        fit_file(source, partial, height, width)
        partial.replace(target)  # whole or not at all, also with RSUs starting together
        return target
    except OSError:  # not writable: read-only image, no home, full disk
        return fit_file(source, Path(tempfile.mkdtemp(prefix="rsu-fit-")) / name, height, width)
