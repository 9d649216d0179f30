"""Zone presence: entries once per visit (through short occlusions), waiting time, class filter."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from rsu.detections import Detections
from rsu.motion import Motion
from rsu.scene import SceneConfig, Zone
from rsu.zones import LEAVE_AFTER_MS, ZoneWatcher

CROSSWALK = Zone(
    id="N_cross",
    kind="crosswalk",
    approach="north",
    polygon=[(0, 0), (100, 0), (100, 50), (0, 50)],
    classes=["person", "bicycle"],
)
BOX = Zone(id="box", kind="intersection", polygon=[(0, 0), (200, 0), (200, 200), (0, 200)])


def frame(*rows: tuple[int, str, float, float, bool]) -> tuple[Detections, Motion]:
    """(track, class, foot x, foot y, stationary)."""
    n = len(rows)
    det = Detections(
        xyxy=np.array([[x - 5, y - 20, x + 5, y] for _, _, x, y, _ in rows], np.float32).reshape(
            -1, 4
        ),
        confidence=np.full(n, 0.9, np.float32),
        class_name=np.array([r[1] for r in rows], dtype=object),
    )
    det.track_id = np.array([r[0] for r in rows], np.int64)
    motion = Motion(
        speed_mps=np.full(n, np.nan),
        heading_deg=np.full(n, np.nan),
        stationary=np.array([r[4] for r in rows], bool),
        parked=np.zeros(n, bool),
    )
    return det, motion


def test_waiting_pedestrians_are_entered_once_through_an_occlusion() -> None:
    watcher = ZoneWatcher([CROSSWALK, BOX])
    t = 0
    for _ in range(10):  # two pedestrians wait; a car passes through the box
        watcher.update(t, *frame((1, "person", 10, 40, True), (2, "person", 20, 40, True),
                                 (7, "car", 150, 150, False)))  # fmt: skip
        t += 100
    watcher.update(t + 900, *frame((1, "person", 10, 40, True)))  # 2 hidden behind a bus
    t = 900 + LEAVE_AFTER_MS - 100  # 2 reappears just within the timeout
    watcher.update(t, *frame((1, "person", 10, 40, True), (2, "person", 22, 40, True)))
    cross, box = watcher.intervals()
    assert cross.entered == {"person": 2}  # not 3: the occlusion was shorter than the timeout
    assert cross.present == {"person": 2} and cross.stopped == 2 and cross.max_present == 2
    assert cross.longest_stay_s == pytest.approx(t / 1000.0)
    assert cross.mean_present["person"] == pytest.approx((10 * 2 + 1 + 2) / 12, abs=0.01)
    assert box.entered == {"car": 1, "person": 2}  # the box counts every class
    assert box.present == {"person": 2}


def test_a_return_after_leaving_is_a_new_visit_and_reset_starts_a_new_interval() -> None:
    watcher = ZoneWatcher([CROSSWALK])
    watcher.update(0, *frame((1, "bicycle", 10, 10, False)))
    watcher.update(100, *frame((1, "bicycle", 300, 300, False)))  # left the zone
    watcher.update(100 + LEAVE_AFTER_MS + 1, *frame((1, "bicycle", 10, 10, False)))
    assert watcher.intervals()[0].entered == {"bicycle": 2}
    watcher.reset()
    watcher.update(5000, *frame())
    (empty,) = watcher.intervals()
    assert empty.entered == {} and empty.present == {} and empty.longest_stay_s is None


def test_zone_config_errors_name_the_cause() -> None:
    with pytest.raises(ValidationError, match="not a simple polygon"):
        Zone(id="z", polygon=[(0, 0), (10, 10), (10, 0), (0, 10)])
    with pytest.raises(ValidationError, match="duplicate zone ids"):
        SceneConfig(name="s", zones=[CROSSWALK, CROSSWALK])
    with pytest.raises(ValidationError, match="kind"):
        Zone(id="z", kind="parking lot", polygon=[(0, 0), (10, 0), (10, 10)])
