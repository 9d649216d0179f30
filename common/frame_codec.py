"""A fast codec for the message sent 30 times a second per camera: the frame.

The RSU builds its frames as these structs and encodes them with msgspec (:func:`encode`):
an order of magnitude cheaper per frame than building and dumping the pydantic models.

pydantic validates a frame of 30 road users in 90-200 µs on this project's machines; msgspec
checks the same bytes against the same constraints in about 20.  The ingest worker decodes
with :func:`decode_for_ingest`: frames through this decoder, and anything it rejects (other
kinds, and frames it finds invalid) through :func:`common.schemas.decode_message`, which
either accepts it (pydantic is laxer: numbers written as strings, NaN) or names what is wrong
for the dead-letter stream.

So the pydantic models stay the one definition of the schema, and this mirror must never
accept what they reject: ``tests/test_frame_codec.py`` checks that field by field.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Literal

import msgspec

from common.schemas import (
    INT64_MAX,
    MAX_OBJECTS_PER_FRAME,
    SCHEMA_VERSION,
    FrameObjects,
    LaneAggregates,
    RoadUserClass,
    RsuHealth,
    decode_message,
    encode_message,
)

# ``\Z``, not ``$``: msgspec matches with Python's re, whose ``$`` also matches before a
# final newline; pydantic's (Rust) regex does not.
_Identifier = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}\Z")]
# The schema's SceneId is 1-128 characters without "|". The lengths are checked here; the
# "|" by decode_for_ingest, and only when the bytes hold one: a pattern per road user
# doubled the decoding time (39 against 20 us for 30 road users).
_SceneId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Bounded to 64 bits, as the schema is (msgspec would also read a longer integer literal as
# a float).
_Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
_EpochMs = _Count
_NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]


class _Strict(
    msgspec.Struct,
    forbid_unknown_fields=True,
    frozen=True,
    kw_only=True,
    gc=False,  # no cycles possible; keeps the collector off tens of thousands of objects
    omit_defaults=True,  # unset optionals are left out on the wire, as encode_message does
):
    pass


class GroundPositionView(_Strict):
    x: float
    y: float


class GeoPositionView(_Strict):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class PerceivedObjectView(_Strict, kw_only=True):
    track_id: _Count | None = None
    category: RoadUserClass
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    bbox: tuple[float, float, float, float]
    ground: GroundPositionView | None = None
    geo: GeoPositionView | None = None
    speed_mps: _NonNegative | None = None
    heading_deg: Annotated[float, msgspec.Meta(ge=0.0, lt=360.0)] | None = None
    lane_id: _SceneId | None = None


class FrameView(_Strict):
    """A validated frame, read-only, with the fields and names of
    :class:`common.schemas.FrameObjects`."""

    # Required here although the pydantic model has defaults: decode_message rejects a
    # message without its version, and the kind selects the model.
    v: Literal[1]
    kind: Literal["frame"]
    rsu_id: _Identifier
    camera_id: _Identifier
    run_id: _Identifier
    seq: _Count
    captured_at_ms: _EpochMs
    published_at_ms: _EpochMs
    pipeline_ms: _NonNegative
    image_width: Annotated[int, msgspec.Meta(gt=0, le=INT64_MAX)]
    image_height: Annotated[int, msgspec.Meta(gt=0, le=INT64_MAX)]
    objects: Annotated[list[PerceivedObjectView], msgspec.Meta(max_length=MAX_OBJECTS_PER_FRAME)]


assert SCHEMA_VERSION == 1, "FrameView mirrors schema v1; update it with the models"

BusMessage = FrameView | FrameObjects | LaneAggregates | RsuHealth

_FRAME_DECODER = msgspec.json.Decoder(FrameView)
_ENCODER = msgspec.json.Encoder()


def decode_for_ingest(data: bytes) -> BusMessage:
    """Validate ``data`` as :func:`decode_message` would, faster for frames.  Raises
    :class:`common.schemas.MessageError` with the same reasons."""
    try:
        frame = _FRAME_DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    else:
        # Without a "|" in the bytes (escaped, it needs a backslash) no lane id holds one.
        if (b"|" not in data and b"\\" not in data) or not any(
            "|" in lane for lane in set(map(LANE_ID, frame.objects)) if lane
        ):
            return frame
    # Other kinds, invalid frames, and frames valid only to pydantic's lax rules (a number
    # sent as a string): those come back as the pydantic model, with the same field names.
    return decode_message(data)


LANE_ID = attrgetter("lane_id")  # of a road user, or of a lane interval


def encode(message: BusMessage) -> bytes:
    """Bytes for the bus: msgspec for the structs here, the pydantic encoder for the rest."""
    if isinstance(message, FrameView):
        return _ENCODER.encode(message)
    return encode_message(message)
