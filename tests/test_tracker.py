"""ByteTrack on hand-made tracks: crossings, occlusions, low scores, one-frame ghosts."""

from __future__ import annotations

import numpy as np

from rsu.detections import Detections
from rsu.tracker import ByteTracker, TrackerConfig


def frame(*objects: tuple[float, float, float]) -> Detections:
    """Objects as (centre x, centre y, score); every box is 40 x 30 px."""
    xyxy = np.array([[x - 20, y - 15, x + 20, y + 15] for x, y, _ in objects], np.float32)
    return Detections(
        xyxy=xyxy.reshape(-1, 4),
        confidence=np.array([s for _, _, s in objects], np.float32),
        class_name=np.array(["car"] * len(objects), dtype=object),
    )


class Tracker(ByteTracker):
    """ByteTracker with a fixed high-score threshold, as a detector's confidence would set."""

    def __init__(self, config: TrackerConfig | None = None, high: float = 0.25) -> None:
        super().__init__(config or TrackerConfig(), fps=30)
        self.high = high

    def update(self, detections: Detections) -> Detections:  # type: ignore[override]
        return super().update(detections, detections.confidence >= self.high)


def ids_by_row(out: Detections) -> dict[int, int]:
    """Rounded centre y -> track id."""
    centres = (out.xyxy[:, 1] + out.xyxy[:, 3]) / 2
    return {round(float(c)): int(t) for c, t in zip(centres, out.track_id, strict=True)}


def test_a_moving_object_keeps_one_id() -> None:
    tracker = Tracker()
    seen = {int(tracker.update(frame((100 + 5 * i, 200, 0.9))).track_id[0]) for i in range(60)}
    assert seen == {1}


def test_crossing_objects_do_not_swap_ids() -> None:
    tracker = Tracker()
    first = None
    for i in range(40):
        a = (100 + 8 * i, 200, 0.9)  # left to right
        b = (420 - 8 * i, 210, 0.8)  # right to left, overlapping around i = 20
        out = tracker.update(frame(a, b))
        ids = ids_by_row(out)
        if first is None:
            first = (ids[a[1]], ids[b[1]])
        assert len(out) == 2
        assert (ids[a[1]], ids[b[1]]) == first, f"swap at frame {i}"


def test_short_occlusion_keeps_the_id_long_occlusion_does_not() -> None:
    tracker = Tracker(TrackerConfig(lost_buffer_s=1.0))
    for i in range(10):
        tracker.update(frame((100 + 5 * i, 200, 0.9)))
    for _ in range(10, 25):  # hidden for 15 frames (< 30-frame buffer)
        assert len(tracker.update(frame())) == 0
    out = tracker.update(frame((100 + 5 * 25, 200, 0.9)))  # back where it should be
    assert out.track_id.tolist() == [1]

    tracker = Tracker(TrackerConfig(lost_buffer_s=1.0))
    for i in range(10):
        tracker.update(frame((100 + 5 * i, 200, 0.9)))
    for _ in range(40):  # hidden longer than the buffer
        tracker.update(frame())
    tracker.update(frame((150, 200, 0.9)))
    out = tracker.update(frame((155, 200, 0.9)))
    assert out.track_id.tolist() == [2]


def test_low_score_boxes_keep_a_partly_occluded_track() -> None:
    tracker = Tracker(TrackerConfig(low_threshold=0.1), high=0.5)
    scores = [0.9] * 5 + [0.2] * 5 + [0.9] * 5
    for i, score in enumerate(scores):
        out = tracker.update(frame((100 + 4 * i, 200, score)))
        assert out.track_id.tolist() == [1], f"frame {i}"
        assert out.confidence[0] == np.float32(score)


def test_a_low_score_box_alone_never_starts_a_track() -> None:
    tracker = Tracker(TrackerConfig(low_threshold=0.1), high=0.5)
    for i in range(5):
        assert len(tracker.update(frame((100 + 4 * i, 200, 0.3)))) == 0


def test_new_objects_are_reported_from_their_second_frame_and_ghosts_never() -> None:
    tracker = Tracker()
    assert tracker.update(frame((100, 100, 0.9))).track_id.tolist() == [1]  # first frame
    out = tracker.update(frame((104, 100, 0.9), (400, 300, 0.9)))  # ghost or newcomer?
    assert out.track_id.tolist() == [1]
    out = tracker.update(frame((108, 100, 0.9)))  # it was a ghost: gone
    assert out.track_id.tolist() == [1]
    tracker.update(frame((112, 100, 0.9), (300, 300, 0.9)))
    out = tracker.update(frame((116, 100, 0.9), (303, 300, 0.9)))  # a newcomer: confirmed
    assert sorted(out.track_id.tolist()) == [1, 3]
    # Ids are never reused: the ghost took 2.
    assert tracker.tracks.ids.max() == 3


def test_empty_frames_and_outputs_keep_detection_fields() -> None:
    tracker = Tracker()
    assert len(tracker.update(Detections.empty())) == 0
    assert len(tracker.update(frame((100, 100, 0.9)))) == 0  # not confirmed yet
    det = frame((103, 100, 0.9))
    det.lane_id = ["L1"]
    out = tracker.update(det)
    assert out.lane_id == ["L1"] and out.class_name.tolist() == ["car"]
    assert out.track_id.tolist() == [1]


def test_a_track_reports_its_majority_class() -> None:
    tracker = Tracker()
    for i, name in enumerate(["car", "car", "truck", "car", "truck", "car"]):
        det = frame((100 + 4 * i, 200, 0.8))
        det.class_name = np.array([name], dtype=object)
        assert tracker.update(det).class_name.tolist() == ["car"], f"frame {i}"


def test_a_tie_in_the_class_vote_goes_to_the_class_seen_first() -> None:
    """Confidence-weighted totals: car 0.5, truck 0.5 is a tie, car came first; truck 0.8
    leads; car 0.8 ties again, and car, first seen, is the class again."""
    tracker = Tracker()
    expected = ["car", "car", "truck", "car"]
    for i, (name, score) in enumerate([("car", 0.5), ("truck", 0.5), ("truck", 0.3),
                                        ("car", 0.3)]):  # fmt: skip
        det = frame((100 + 4 * i, 200, score))
        det.class_name = np.array([name], dtype=object)
        assert tracker.update(det).class_name.tolist() == [expected[i]], f"frame {i}"


def test_votes_of_expired_tracks_are_forgotten() -> None:
    tracker = Tracker(TrackerConfig(lost_buffer_s=0.1))
    tracker.update(frame((100, 200, 0.9)))
    for _ in range(10):
        tracker.update(frame())
    assert tracker._votes == {} and tracker._leader == {}
