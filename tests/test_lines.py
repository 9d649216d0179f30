"""Line crossings: flicker, stopped vehicles, frame edges, direction, extent."""

from __future__ import annotations

import numpy as np

from rsu.detections import Detections
from rsu.lines import LineCounter, LineSpec

# A horizontal line across the road at y = 300, from x = 100 to x = 500. Moving down the
# image (towards the camera) goes from its left side to its right: positive.
LINE = LineSpec("stop", (100.0, 300.0), (500.0, 300.0))


def tracks(*objects: tuple[int, float, float]) -> Detections:
    """(track id, anchor x, anchor y): boxes 40 wide, 30 tall, bottom centre at the anchor."""
    xyxy = np.array([[x - 20, y - 30, x + 20, y] for _, x, y in objects], np.float32)
    det = Detections(
        xyxy=xyxy.reshape(-1, 4),
        confidence=np.full(len(objects), 0.9, np.float32),
        class_name=np.array(["car"] * len(objects), dtype=object),
    )
    det.track_id = np.array([t for t, _, _ in objects], np.int64)
    return det


def run(counter: LineCounter, path: list[tuple[int, float, float]]) -> list:
    out = []
    for point in path:
        out += counter.update(tracks(point))
    return out


def test_a_vehicle_driving_across_counts_once_in_its_direction() -> None:
    counter = LineCounter([LINE])
    crossings = run(counter, [(1, 300, y) for y in range(250, 360, 10)])
    assert [(c.track_id, c.positive, c.category) for c in crossings] == [(1, True, "car")]
    crossings = run(counter, [(2, 200, y) for y in range(360, 240, -10)])
    assert [(c.track_id, c.positive) for c in crossings] == [(2, False)]
    assert counter.totals == {("stop", True, "car"): 1, ("stop", False, "car"): 1}


def test_box_flicker_around_the_line_never_counts() -> None:
    counter = LineCounter([LINE], margin=0.1, min_frames=2)
    # A vehicle waiting on the line: its anchor jitters 2 px either side (margin is 3 px).
    jitter = [(1, 300, 300 + d) for d in [-2, 2, -1, 2, -2, 1, 2, -2] * 5]
    assert run(counter, [(1, 300, 280), *jitter]) == []
    # Jitter beyond the margin, but for one frame at a time: still nothing.
    flicker = [(1, 300, 300 + d) for d in [-8, 8, -8, 8, -8, 8, -8]]
    assert run(counter, [(1, 300, 280), *flicker]) == []


def test_a_stopped_vehicle_rocking_over_the_line_counts_at_most_once() -> None:
    counter = LineCounter([LINE], min_frames=2)
    path = [(1, 300, 280)]
    for _ in range(5):  # crosses, holds, backs up, holds, crosses again...
        path += [(1, 300, 310)] * 3 + [(1, 300, 290)] * 3
    crossings = run(counter, path)
    assert [c.positive for c in crossings] == [True, False]  # once each way, never more


def test_a_track_first_seen_past_or_on_the_line_is_not_counted() -> None:
    counter = LineCounter([LINE])
    # Appearing (from occlusion, or at the frame edge) just past the line, driving on.
    assert run(counter, [(7, 300, y) for y in range(310, 540, 10)]) == []
    # Appearing on the line, inside the margin: where it came from is unknown.
    assert run(counter, [(8, 300, 299), *[(8, 300, y) for y in range(310, 400, 10)]]) == []


def test_a_crossing_beside_the_segment_does_not_count() -> None:
    counter = LineCounter([LINE])
    assert run(counter, [(1, 700, y) for y in range(250, 360, 10)]) == []


def test_crossings_take_the_lane_of_the_line_or_of_the_track() -> None:
    counter = LineCounter([LINE, LineSpec("lane_line", (100, 400), (500, 400), lane_id="L9")])
    out = []
    for y in range(250, 460, 10):
        det = tracks((1, 300, y))
        det.lane_id = ["L1"]
        out += counter.update(det)
    assert [(c.line_id, c.lane_id) for c in out] == [("stop", "L1"), ("lane_line", "L9")]


def test_a_stop_line_crossing_belongs_to_the_lane_the_vehicle_came_from() -> None:
    counter = LineCounter([LINE])
    out = []
    for y in range(380, 240, -10):  # driving up out of lane L2 into the intersection
        det = tracks((1, 300, y))
        det.lane_id = ["L2" if y > 300 else None]
        out += counter.update(det)
    assert [(c.positive, c.lane_id) for c in out] == [(False, "L2")]


def test_untracked_frames_and_many_tracks() -> None:
    counter = LineCounter([LINE])
    det = tracks((1, 300, 250))
    det.track_id = None
    assert counter.update(det) == []
    crossings = []
    for step in range(12):
        y = 250 + 10 * step
        crossings += counter.update(tracks(*[(t, 120 + 30 * t, y) for t in range(12)]))
    assert sorted(c.track_id for c in crossings) == list(range(12))


def test_state_of_departed_tracks_is_forgotten() -> None:
    counter = LineCounter([LINE], forget_after_frames=30)
    run(counter, [(t, 300, 250) for t in range(100)])
    for _ in range(90):
        counter.update(tracks())
    assert counter._state[0] == {}


def test_many_road_users_at_once_count_once_each_and_are_forgotten() -> None:
    """150 road users crossing together each count once; once forgotten, others crossing
    the same way count again."""
    counter = LineCounter([LINE], forget_after_frames=30)

    def crowd(first_id: int, y: float) -> Detections:
        return tracks(*[(first_id + k, 102 + k * 2.6, y) for k in range(150)])

    crossings = []
    for y in range(250, 360, 10):
        crossings += counter.update(crowd(1, y))
    assert len(crossings) == 150 and {c.track_id for c in crossings} == set(range(1, 151))
    for _ in range(60):  # all gone and forgotten
        counter.update(tracks())
    assert counter._state[0] == {}
    crossings = []
    for y in range(250, 360, 10):  # others, in the same slots, the same way
        crossings += counter.update(crowd(1001, y))
    assert len(crossings) == 150 and all(c.positive for c in crossings)
    assert counter.totals == {("stop", True, "car"): 300}


def test_a_box_cut_off_by_the_frame_edge_sets_no_side() -> None:
    counter = LineCounter([LineSpec("out", (500.0, 440.0), (958.0, 440.0))])
    frame_size = (960, 540)

    def bus(x1: float, y2: float) -> Detections:
        det = Detections(
            xyxy=np.array([[x1, y2 - 120, min(x1 + 400, 960), y2]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_name=np.array(["bus"], dtype=object),
        )
        det.track_id = np.array([5])
        return det

    crossings = []
    # Entering at the right edge, turning: while cut off, its box bottom dips below the line.
    for x1, y2 in [(900, 470), (850, 465), (800, 460), (700, 455)]:
        crossings += counter.update(bus(x1, y2), frame_size)
    # Fully in the frame only once it is above the line, driving on up.
    for x1, y2 in [(520, 420), (480, 400), (440, 380)]:
        crossings += counter.update(bus(x1, y2), frame_size)
    assert crossings == []
    # The same path fully inside the frame is a real crossing.
    counter = LineCounter([LineSpec("out", (500.0, 440.0), (958.0, 440.0))])
    for y2 in [470, 465, 460, 455, 420, 400, 380]:
        crossings += counter.update(bus(520, y2), frame_size)
    assert [c.positive for c in crossings] == [False]


def test_a_box_a_few_pixels_short_of_the_frame_edge_is_still_cut_off() -> None:
    """At imgsz 320 a model pixel is 3 px of a 960-px frame: a cut-off box's edge wanders a
    few pixels inside the frame (the articulated bus of the intersection clip came to
    x2 = 957.9 in one frame, and was counted)."""
    counter = LineCounter([LineSpec("out", (500.0, 440.0), (958.0, 440.0))])
    frame_size = (960, 540)

    def bus(x1: float, x2: float, y2: float) -> Detections:
        det = Detections(
            xyxy=np.array([[x1, y2 - 250, x2, y2]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_name=np.array(["bus"], dtype=object),
        )
        det.track_id = np.array([7])
        return det

    crossings = []
    for x1, y2 in [(800, 522), (760, 522), (720, 521)]:  # 4.5 px inside the edge
        crossings += counter.update(bus(x1, 955.5, y2), frame_size)
    for x1, y2 in [(520, 400), (500, 390), (480, 380)]:  # whole, above the line
        crossings += counter.update(bus(x1, 850, y2), frame_size)
    assert crossings == []
