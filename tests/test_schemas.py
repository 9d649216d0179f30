from __future__ import annotations

import orjson
import pytest

from common.schemas import (
    MAX_MESSAGE_BYTES,
    FrameObjects,
    LaneAggregates,
    LaneInterval,
    MessageError,
    PerceivedObject,
    RoadUserClass,
    RsuHealth,
    decode_message,
    encode_message,
    message_key,
)


def frame(**overrides: object) -> FrameObjects:
    data: dict[str, object] = {
        "rsu_id": "rsu-1",
        "camera_id": "cam0",
        "run_id": "1700000000000",
        "seq": 7,
        "captured_at_ms": 1_700_000_000_123,
        "published_at_ms": 1_700_000_000_140,
        "pipeline_ms": 12.5,
        "image_width": 960,
        "image_height": 540,
        "objects": [
            PerceivedObject(
                track_id=3,
                category=RoadUserClass.car,
                confidence=0.91,
                bbox=(10.0, 20.0, 110.0, 80.0),
                lane_id="S_in_1",
            ),
            PerceivedObject(category=RoadUserClass.person, confidence=0.4, bbox=(1, 2, 3, 4)),
        ],
    }
    data.update(overrides)
    return FrameObjects(**data)


def test_frame_round_trip() -> None:
    msg = frame()
    decoded = decode_message(encode_message(msg))
    assert decoded == msg
    assert message_key(decoded) == "frame/rsu-1/cam0/1700000000000/7"


def test_every_message_carries_version_and_kind() -> None:
    raw = orjson.loads(encode_message(frame()))
    assert raw["v"] == 1 and raw["kind"] == "frame"
    assert "track_id" not in raw["objects"][1]  # unset optionals are omitted on the wire


def test_lane_aggregates_and_health_round_trip() -> None:
    lanes = LaneAggregates(
        rsu_id="rsu-1",
        camera_id="cam0",
        run_id="r1",
        seq=0,
        interval_start_ms=1_700_000_000_000,
        interval_s=60,
        observed_s=60,
        lanes=[LaneInterval(lane_id="L1", counts={RoadUserClass.car: 12}, occupancy=0.3)],
    )
    health = RsuHealth(
        rsu_id="rsu-1",
        camera_id="cam0",
        run_id="r1",
        seq=4,
        sent_at_ms=1_700_000_000_000,
        status="ok",
        source_connected=True,
        fps=29.5,
        frames_processed=100,
        frames_skipped=0,
        budget_ms=20,
        budget_violations=0,
    )
    assert decode_message(encode_message(lanes)) == lanes
    assert decode_message(encode_message(health)) == health


def _mutated(**changes: object) -> bytes:
    raw = orjson.loads(encode_message(frame()))
    for path, value in changes.items():
        target = raw
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
    return orjson.dumps(raw)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (_mutated(v=2), "unsupported schema version"),
        (_mutated(v=KeyError), "unsupported schema version"),
        (_mutated(kind="bogus"), "kind"),
        (_mutated(rsu_id=KeyError), "rsu_id: Field required"),
        (_mutated(rsu_id="has space"), "rsu_id"),
        (_mutated(seq=-1), "seq"),
        (_mutated(surprise=1), "surprise: Extra inputs are not permitted"),
        (_mutated(objects__0__category="airplane"), "objects.0.category"),
        (_mutated(objects__0__confidence=1.5), "objects.0.confidence"),
        (_mutated(objects__0__bbox=[1, 2, 3]), "objects.0.bbox"),
        (_mutated(objects__0__heading_deg=360.0), "objects.0.heading_deg"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        decode_message(payload)
    assert reason in str(info.value)


def test_oversized_payload_is_rejected_before_parsing() -> None:
    with pytest.raises(MessageError, match="too large"):
        decode_message(b" " * (MAX_MESSAGE_BYTES + 1))
