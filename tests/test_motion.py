from __future__ import annotations

import numpy as np
import pytest

from rsu.detections import Detections
from rsu.motion import MotionConfig, MotionEstimator


def det(track: int, ground: tuple[float, float] | None, px: tuple[float, float] = (100, 100)):
    x, y = px
    d = Detections(
        xyxy=np.array([[x - 20, y - 40, x + 20, y]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_name=np.array(["car"], dtype=object),
    )
    d.track_id = np.array([track])
    d.ground_xy = np.array([ground]) if ground is not None else None
    return d


@pytest.mark.parametrize(
    ("velocity", "heading"), [((0, 10), 0.0), ((10, 0), 90.0), ((0, -10), 180.0), ((-7, -7), 225.0)]
)
def test_speed_and_heading_at_constant_velocity(velocity, heading) -> None:
    estimator = MotionEstimator(MotionConfig())
    rng = np.random.default_rng(0)
    for k in range(90):  # 3 s at 30 fps, with 5 cm of position noise
        t = k / 30
        pos = (velocity[0] * t + rng.normal(0, 0.05), velocity[1] * t + rng.normal(0, 0.05))
        motion = estimator.update(det(1, pos), int(t * 1000))
    assert motion.speed_mps[0] == pytest.approx(np.hypot(*velocity), rel=0.03)
    off = (motion.heading_deg[0] - heading + 180.0) % 360.0 - 180.0  # circular difference
    assert abs(off) < 2.0
    assert not motion.stationary[0]


def test_a_standing_vehicle_is_stationary_has_no_heading_and_parks_later() -> None:
    estimator = MotionEstimator(MotionConfig(parked_after_s=5.0))
    rng = np.random.default_rng(1)
    for k in range(30 * 8):
        motion = estimator.update(det(1, tuple(rng.normal(0, 0.05, 2))), int(k / 30 * 1000))
        if k == 30 * 3:
            assert motion.stationary[0] and not motion.parked[0]
            assert np.isnan(motion.heading_deg[0])
    assert motion.stationary[0] and motion.parked[0]
    # It drives off: no longer stationary or parked.
    for k in range(30 * 8, 30 * 10):
        motion = estimator.update(det(1, (0.0, (k - 240) / 30 * 8)), int(k / 30 * 1000))
    assert not motion.stationary[0] and not motion.parked[0]


def test_without_calibration_stationary_comes_from_pixels() -> None:
    estimator = MotionEstimator(MotionConfig())
    for k in range(60):
        standing = estimator.update(det(1, None, (100 + (k % 2), 200)), int(k / 30 * 1000))
    assert standing.stationary[0] and np.isnan(standing.speed_mps[0])
    for k in range(60):
        moving = estimator.update(det(2, None, (100 + 3 * k, 200)), int(k / 30 * 1000))
    assert not moving.stationary[0]


def test_departed_tracks_are_forgotten() -> None:
    estimator = MotionEstimator(MotionConfig(), forget_after_s=2.0)
    estimator.update(det(1, (0, 0)), 0)
    estimator.update(det(2, (0, 0)), 5000)
    assert list(estimator._tracks) == [2]
