"""Counting error on hand-made tracks: the same line rule on both sides, and mask linking."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rsu.config import RsuConfig
from rsu.count_eval import count_crossings, counting_error, link_mask_tracks, truth_tracks
from rsu.detections import Detections
from rsu.groundtruth import GroundTruth, GroundTruthError, GtBox, GtImage
from rsu.scene import SceneConfig

SCENE = SceneConfig.model_validate(
    {"name": "s", "lines": [{"id": "L", "points": [[0, 100], [200, 100]]}]}
)
CONFIG = RsuConfig(rsu_id="t")
SIZE = (200, 200)


def masks_truth(frames: list[list[tuple[float, float, float, float]]]) -> GroundTruth:
    """Frame k (0-based) holds the given untracked component boxes, as the mask loader gives."""
    images = [
        GtImage(k + 1, f"gt{k + 1:06d}.png", 200, 200, frame_index=k) for k in range(len(frames))
    ]
    boxes = {k + 1: [GtBox(b, "vehicle") for b in frame] for k, frame in enumerate(frames)}
    return GroundTruth(images=images, boxes=boxes)


def moving_down(x: float, start: float, frames: int, step: float = 10.0) -> list[tuple]:
    return [(x, start + k * step - 20, x + 20, start + k * step) for k in range(frames)]


def test_linked_mask_components_count_once_each_and_need_identities() -> None:
    a = moving_down(20, 40, 14)  # crosses y = 100 at frame 6
    b = moving_down(120, 60, 14)  # crosses at frame 4
    truth = masks_truth([[ba, bb] for ba, bb in zip(a, b, strict=True)])
    with pytest.raises(GroundTruthError, match="track identities"):
        list(truth_tracks(truth))
    link_mask_tracks(truth)
    ids = {box.track_id for boxes in truth.boxes.values() for box in boxes}
    assert ids == {1, 2}
    counts = count_crossings(truth_tracks(truth), SCENE, CONFIG, SIZE)
    assert counts == Counter({("L", True): 2})


def test_a_component_that_jumps_is_a_new_track_and_its_first_side_is_unknown() -> None:
    # A box that reappears far from where it was (no overlap) starts a new track; first seen
    # past the line, that new track is not counted: the same rule the RSU applies.
    frames = [[box] for box in moving_down(20, 40, 4)] + [[(150, 150, 170, 170)]] * 4
    truth = masks_truth(frames)
    link_mask_tracks(truth)
    assert truth.boxes[5][0].track_id == 2
    assert count_crossings(truth_tracks(truth), SCENE, CONFIG, SIZE) == Counter()


def test_counting_error_is_summed_over_lines_and_directions() -> None:
    truth = Counter({("L", True): 20, ("L", False): 2})
    ours = Counter({("L", True): 18, ("L", False): 3})
    result = counting_error(truth, ours, SCENE)
    assert result["count_error"] == pytest.approx((2 + 1) / 22, abs=1e-4)
    assert result["lines"]["L"]["positive"] == {"gt": 20, "rsu": 18, "error": -0.1}
    assert result["lines"]["L"]["negative"]["error"] == 0.5
    empty = counting_error(Counter(), Counter(), SCENE)
    assert empty["count_error"] is None and empty["lines"]["L"]["positive"]["error"] is None


def test_rsu_and_truth_sides_share_the_line_rule() -> None:
    # One detection track flickering around the line is not a crossing on either side.
    flicker = []
    for y in [95, 103, 96, 104, 97, 102]:
        d = Detections(
            xyxy=np.array([[20, y - 20, 40, y]], np.float32),
            confidence=np.ones(1, np.float32),
            class_name=np.array(["car"], dtype=object),
        )
        d.track_id = np.array([7], np.int64)
        flicker.append(d)
    assert count_crossings(flicker, SCENE, CONFIG, SIZE) == Counter()
