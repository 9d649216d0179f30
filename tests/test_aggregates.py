"""Lane/line aggregates on a synthetic calibrated scene: 1 px = 0.1 m, y grows towards us."""

from __future__ import annotations

import numpy as np

from rsu.aggregates import LaneAggregator
from rsu.detections import Detections
from rsu.lines import Crossing
from rsu.motion import Motion
from rsu.scene import GroundProjector, SceneConfig

SCENE = SceneConfig.model_validate(
    {
        "name": "s",
        "calibration": {  # ground metres: x = px / 10, y = (1000 - py) / 10 (north is up)
            "image_points": [[0, 0], [1000, 0], [1000, 1000], [0, 1000]],
            "ground_points": [[0, 100], [100, 100], [100, 0], [0, 0]],
        },
        "lanes": [
            {
                "id": "L1",
                "approach": "south",
                "polygon": [[0, 300], [100, 300], [100, 1000], [0, 1000]],
            },
            {
                "id": "L2",
                "approach": "south",
                "polygon": [[100, 300], [200, 300], [200, 1000], [100, 1000]],
            },
        ],
        "lines": [
            {"id": "stop", "kind": "stop", "approach": "south", "points": [[0, 300], [200, 300]]}
        ],
    }
)
HEADER = {"rsu_id": "r", "camera_id": "c", "run_id": "1"}


def vehicles(*rows: tuple[int, float, float, str, bool, bool, float]) -> tuple[Detections, Motion]:
    """(track, anchor x, anchor y, lane, stationary, parked, speed m/s)."""
    n = len(rows)
    boxes = np.array([[x - 10, y - 20, x + 10, y] for _, x, y, *_ in rows], np.float32)
    det = Detections(
        xyxy=boxes.reshape(-1, 4),
        confidence=np.full(n, 0.9, np.float32),
        class_name=np.array(["car"] * n, dtype=object),
    )
    det.track_id = np.array([r[0] for r in rows], np.int64)
    det.lane_id = [r[3] for r in rows]
    det.ground_xy = GroundProjector(SCENE.calibration).to_ground(det.bottom_centres())
    motion = Motion(
        speed_mps=np.array([r[6] for r in rows], float),
        heading_deg=np.full(n, np.nan),
        stationary=np.array([r[4] for r in rows], bool),
        parked=np.array([r[5] for r in rows], bool),
    )
    return det, motion


def test_intervals_are_aligned_and_carry_lane_and_line_figures() -> None:
    agg = LaneAggregator(SCENE, 10.0, HEADER, GroundProjector(SCENE.calibration))
    t0 = 1_700_000_003_000  # 3 s into a 10 s interval
    out = []
    for k in range(100):  # 10 s at 10 fps
        t = t0 + k * 100
        rows = [(1, 50, 320, "L1", True, False, 0.0), (2, 50, 400, "L1", True, False, 0.0)]
        if k % 2 == 0:  # L2 is occupied every other frame, by a car at 5 m/s
            rows.append((3, 150, 600, "L2", False, False, 5.0))
        if k == 99:  # a parked car far back in L1 is not part of the queue
            rows.append((4, 50, 900, "L1", True, True, 0.0))
        det, motion = vehicles(*rows)
        crossings = []
        if k == 5:
            crossings = [Crossing("stop", 7, "car", False, "L1")]
        if k == 6:  # the same track again (as from a second line): counted once in the lane
            crossings = [Crossing("stop", 7, "car", False, "L1")]
        closed = agg.update(t, det, motion, crossings)
        if closed is not None:
            out.append(closed)
    out.append(agg.flush(100))
    first, last = out
    # Started 3 s into the first bin: 7 s observed; the last, partial bin: 3 s.
    assert first.interval_start_ms == 1_700_000_000_000 and first.interval_s == 10.0
    assert first.observed_s == 7.0
    assert last.interval_start_ms == 1_700_000_010_000 and last.interval_s == 10.0
    assert last.observed_s == 3.0
    l1, l2 = first.lanes
    assert l1.counts == {"car": 1}
    assert {k.value: v for k, v in first.lines[0].negative.items()} == {"car": 2}
    assert l1.occupancy == 1.0 and l2.occupancy == 0.5
    assert l2.mean_speed_mps == 5.0 and l1.mean_speed_mps is None
    # Queue at the end of the first interval: two standing cars, the farthest 10 m back.
    assert l1.queue_vehicles == 2 and l1.queue_m == 10.0
    assert l2.queue_vehicles == 0 and l2.queue_m == 0.0
    # At the end of the last interval, the parked car does not lengthen the queue.
    assert last.lanes[0].queue_vehicles == 2 and last.lanes[0].queue_m == 10.0
    assert [first.seq, last.seq] == [0, 1]


def test_uncalibrated_scene_has_no_metres_but_still_counts_and_occupancy() -> None:
    scene = SCENE.model_copy(update={"calibration": None})
    agg = LaneAggregator(scene, 5.0, HEADER, None)
    det, motion = vehicles((1, 50, 320, "L1", True, False, float("nan")))
    det.ground_xy = None
    agg.update(0, det, motion, [Crossing("stop", 1, "car", True, "L1")])
    message = agg.flush(100)
    lane = message.lanes[0]
    assert lane.queue_vehicles == 1 and lane.queue_m is None and lane.mean_speed_mps is None
    assert lane.counts == {"car": 1} and lane.occupancy == 1.0


def test_a_scene_without_lanes_or_lines_publishes_no_aggregates() -> None:
    agg = LaneAggregator(SceneConfig(name="empty"), 10.0, HEADER)
    assert not agg.active
