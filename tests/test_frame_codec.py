"""The ingest's fast frame decoder against the pydantic models it mirrors.

The rule: what the fast decoder accepts, pydantic accepts too, and reads the same.  (It may
reject more: those messages go on to pydantic, so nothing valid is lost.)  Each field of a
frame, at every level, is given boundary and wrong values, left out, and doubled; unknown
fields are added; and hypothesis puts arbitrary JSON at arbitrary places.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.frame_codec import _FRAME_DECODER, FrameView, decode_for_ingest
from common.schemas import FrameObjects, LaneAggregates, MessageError, decode_message

RAW = "\x00raw:"  # a string value replaced by raw JSON text after encoding


def valid_frame() -> dict[str, object]:
    obj = {
        "track_id": 3,
        "category": "car",
        "confidence": 0.91,
        "bbox": [10.0, 20.0, 110.0, 80.0],
        "ground": {"x": -3.5, "y": 42.0},
        "geo": {"lat": 39.9, "lon": 116.4},
        "speed_mps": 8.25,
        "heading_deg": 359.9,
        "lane_id": "S_in_1",
    }
    return {
        "v": 1, "rsu_id": "rsu-1", "camera_id": "cam0", "run_id": "1700000000000", "seq": 7,
        "kind": "frame", "captured_at_ms": 1_700_000_000_123,
        "published_at_ms": 1_700_000_000_140, "pipeline_ms": 12.5, "image_width": 960,
        "image_height": 540, "objects": [obj, {"category": "person", "confidence": 0.4,
                                               "bbox": [1, 2, 3, 4]}],
    }  # fmt: skip


def encode(data: object) -> bytes:
    text = orjson.dumps(data)
    # raw tokens: "\u0000raw:NaN" -> NaN
    while (start := text.find(b'"\\u0000raw:')) >= 0:
        end = text.index(b'"', start + 1)
        text = text[:start] + text[start + len('"\\u0000raw:') : end] + text[end + 1 :]
    return text


VALUES: list[object] = [
    None, True, False, 0, -1, 1, 2, 0.0, -0.0, 0.5, 1.0, 1.5, 59, 64, 89.99, 90, 90.5, 180,
    180.5, 359.999, 360, 360.0, -90.5, -180.5, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1,
    -(2**63), f"{RAW}18446744073709551616", f"{RAW}1e400", f"{RAW}-1e400", f"{RAW}NaN",
    f"{RAW}Infinity", f"{RAW}1E2",
    f"{RAW}100000000000000000000000", "1", "0.5", "", "car", "bus", "Car", "frame", "lanes",
    "a", "a\n", "a b", "é", "a" * 64, "a" * 65, "a" * 128, "a" * 129, "a|b", "|", "\n",
    "rsu-1", "x.y_z-9", [], {}, [1, 2, 3],
    [1, 2, 3, 4], [1, 2, 3, 4, 5], ["1", 2, 3, 4], [1.5, None, 3, 4], {"x": 1, "y": 2},
    {"x": 1}, {"x": 1, "y": 2, "z": 3}, {"lat": 1, "lon": 2},
]  # fmt: skip


def paths(data: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    """Every place in the frame a value sits: dict keys and list positions, recursively."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield (*prefix, index)
            yield from paths(value, (*prefix, index))


def replaced(data: object, path: tuple[object, ...], value: object) -> object:
    out = copy.deepcopy(data)
    node = out
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return out


def removed(data: object, path: tuple[object, ...]) -> object:
    out = copy.deepcopy(data)
    node = out
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    del node[path[-1]]  # type: ignore[arg-type]
    return out


def pydantic_reads(payload: bytes) -> dict[str, object] | None:
    try:
        message = decode_message(payload)
    except MessageError:
        return None
    if not isinstance(message, FrameObjects):
        return None
    # (ints beyond 64 bits too; unset optionals left out, as both encoders write them)
    return json.loads(json.dumps(message.model_dump(mode="json", exclude_none=True)))


def fast_reads(payload: bytes) -> dict[str, object] | None:
    """What the fast path (msgspec, and the checks decode_for_ingest adds) accepts."""
    try:
        frame = _FRAME_DECODER.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    try:
        message = decode_for_ingest(payload)
    except MessageError:
        return None  # decode_for_ingest's own checks sent it on to pydantic, which rejects it
    if not isinstance(message, FrameView):
        return None  # decode_for_ingest's own checks sent it on to pydantic
    assert message == frame
    return orjson.loads(msgspec.json.encode(message))


def assert_never_laxer(payload: bytes) -> None:
    fast = fast_reads(payload)
    if fast is None:
        return
    slow = pydantic_reads(payload)
    assert slow is not None, f"fast decoder accepts what pydantic rejects: {payload[:300]!r}"
    assert fast == slow


def test_a_valid_frame_reads_the_same_both_ways() -> None:
    payload = encode(valid_frame())
    assert fast_reads(payload) is not None
    assert_never_laxer(payload)
    view = decode_for_ingest(payload)
    assert isinstance(view, FrameView)
    assert view.objects[0].category == "car" and view.objects[0].ground.y == 42.0  # type: ignore[union-attr]


def test_every_field_with_boundary_and_wrong_values() -> None:
    frame = valid_frame()
    checked = accepted = 0
    for path in list(paths(frame)):
        for value in VALUES:
            payload = encode(replaced(frame, path, value))
            assert_never_laxer(payload)
            checked += 1
            accepted += fast_reads(payload) is not None
        assert_never_laxer(encode(removed(frame, path)))
        if isinstance(path[-1], str):
            # the same key twice: JSON readers disagree on which wins
            text = encode(replaced(frame, path, f"{RAW}__DUP__"))
            for value in (None, -1, "a\n", 2**63):
                twice = text.replace(
                    b"__DUP__",
                    encode(value) + b',"' + str(path[-1]).encode() + b'":' + encode(value),
                )
                assert_never_laxer(twice)
    # the mutations must reach both sides of the line, or the test proves nothing
    assert checked > 2000 and 100 < accepted < checked // 2


def test_unknown_fields_at_every_level_are_rejected_by_both() -> None:
    frame = valid_frame()
    for target in ((), ("objects", 0), ("objects", 0, "ground"), ("objects", 0, "geo")):
        data = copy.deepcopy(frame)
        node = data
        for step in target:
            node = node[step]  # type: ignore[index]
        node["extra"] = 1  # type: ignore[index]
        payload = encode(data)
        assert fast_reads(payload) is None and pydantic_reads(payload) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
FRAME_PATHS = list(paths(valid_frame()))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FRAME_PATHS), json_values)
def test_arbitrary_json_anywhere(path: tuple[object, ...], value: object) -> None:
    assert_never_laxer(encode(replaced(valid_frame(), path, value)))


def test_what_the_fast_decoder_rejects_goes_to_pydantic() -> None:
    frame = valid_frame()
    lax = encode(replaced(frame, ("seq",), "8"))  # a number as a string: pydantic takes it
    assert fast_reads(lax) is None
    message = decode_for_ingest(lax)
    assert isinstance(message, FrameObjects) and message.seq == 8
    with pytest.raises(MessageError, match="confidence"):
        decode_for_ingest(encode(replaced(frame, ("objects", 0, "confidence"), 1.5)))
    with pytest.raises(MessageError, match="not JSON"):
        decode_for_ingest(b'{"v":1,')
    lanes = {
        "v": 1, "kind": "lane_aggregates", "rsu_id": "rsu-1", "camera_id": "cam0",
        "run_id": "r", "seq": 0, "interval_start_ms": 0, "interval_s": 60.0,
        "observed_s": 60.0, "lanes": [{"lane_id": "S_in_1", "counts": {"car": 3}}],
    }  # fmt: skip
    assert isinstance(decode_for_ingest(encode(lanes)), LaneAggregates)


def test_frames_the_rsu_builds_are_valid_to_pydantic_and_read_back_the_same() -> None:
    import numpy as np

    from common.frame_codec import encode
    from rsu.detections import Detections
    from rsu.pipeline import to_objects

    n = 5
    detections = Detections(
        xyxy=np.array([[10, 20, 70, 60]] * n, np.float32) + np.arange(n, dtype=np.float32)[:, None],
        confidence=np.array([0.9, 0.5, 1.0, 0.25, 0.1], np.float32),
        class_name=np.array(["car", "bus", "person", "truck", "bicycle"], object),
        track_id=np.arange(n),
        lane_id=["S_in_1", None, "S_in_2", None, "S_in_1"],
        # a foot above the horizon projects to no finite point: it must not become NaN
        ground_xy=np.array([[1.234, 5.678], [np.nan, np.nan], [np.inf, 1.0], [0, 0], [3, 4]]),
        geo=np.array([[39.9, 116.4], [np.nan, np.nan], [np.nan, 116.4], [39.9, 116.4], [0, 0]]),
        speed_mps=np.array([8.256, np.nan, 0.0, 1.0, 2.0]),
        heading_deg=np.array([359.96, np.nan, 0.0, 180.0, 359.94]),
    )
    view = FrameView(
        v=1, kind="frame", rsu_id="rsu-1", camera_id="cam0", run_id="r", seq=0,
        captured_at_ms=1, published_at_ms=2, pipeline_ms=3.0, image_width=960,
        image_height=540, objects=to_objects(detections),
    )  # fmt: skip
    payload = encode(view)
    message = decode_message(payload)
    assert isinstance(message, FrameObjects)
    objects = message.objects
    assert [o.category.value for o in objects] == ["car", "bus", "person", "truck", "bicycle"]
    assert objects[0].ground is not None and (objects[0].ground.x, objects[0].ground.y) == (
        1.23,
        5.68,
    )
    assert [o.ground is None for o in objects] == [False, True, True, False, False]
    assert [o.geo is None for o in objects] == [False, True, True, False, False]
    assert [o.speed_mps for o in objects] == [8.26, None, 0.0, 1.0, 2.0]
    assert [o.heading_deg for o in objects] == [0.0, None, 0.0, 180.0, 359.9]
    assert objects[1].lane_id is None and "lane_id" not in orjson.loads(payload)["objects"][1]
    assert fast_reads(payload) == pydantic_reads(payload)
