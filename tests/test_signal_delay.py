"""Signal delay per movement measured from camera observations (Little's law)."""

from __future__ import annotations

import pytest

from citybrain.routing.signal_delay import MeasuredDelays, movement_lanes
from citybrain.signals.intersection import Link, SignalIntersection
from citybrain.signals.observation import IntersectionObservation, LaneObservation


def _obs(t: float, lanes: dict[str, LaneObservation], range_m: float = 120.0):
    return {"J": IntersectionObservation("J", t, range_m, lanes)}


def test_littles_law_turns_counts_and_departures_into_seconds() -> None:
    meter = MeasuredDelays(tau_s=60.0, lane_speed_mps={"in_0": 12.0, "in_1": 12.0})
    # Lane in_0: always 6 road users in view, one leaves every 2 s: 12 s in view, of which
    # 10 s (120 m at 12 m/s) is driving; lane in_1 flows freely: 1 in view, 1 leaves a
    # second... and lane in_2 has never had anyone.
    for step in range(1, 600):
        meter.update(float(step), _obs(step, {
            "in_0": LaneObservation(vehicles=6, queue=4, departures=step % 2),
            "in_1": LaneObservation(vehicles=1, departures=1),
            "in_2": LaneObservation(),
        }))  # fmt: skip
    assert meter.lane_delay_s("in_0") == pytest.approx(2.0, abs=0.3)
    assert meter.lane_delay_s("in_1") == 0.0  # faster than the speed limit: no delay
    assert meter.lane_delay_s("in_2") == 0.0 and meter.lane_delay_s("unknown") == 0.0
    # The same observation time again changes nothing.
    before = meter.lane_delay_s("in_0")
    meter.update(599.0, _obs(599.0, {"in_0": LaneObservation(vehicles=60, queue=60)}))
    assert meter.lane_delay_s("in_0") == before


def test_a_queue_filling_the_view_runs_on_past_it() -> None:
    lengths = {"long": 240.0, "short": 240.0}
    meter = MeasuredDelays(tau_s=30.0, lane_length_m=lengths)
    for step in range(1, 300):
        meter.update(float(step), _obs(step, {
            # 15 stopped in 120 m of view: full, so the 240 m lane holds about twice that.
            "long": LaneObservation(vehicles=15, queue=15, departures=step % 2),
            # 12 stopped (90 m): the queue ends in view.
            "short": LaneObservation(vehicles=12, queue=12, departures=step % 2),
        }))  # fmt: skip
    free = 240 / 13.9
    assert meter.lane_delay_s("long") == pytest.approx(30 / 0.5 - free, abs=2.0)
    assert meter.lane_delay_s("short") == pytest.approx(12 / 0.5 - 120 / 13.9, abs=1.0)


def test_a_queue_that_never_moves_is_a_long_but_finite_wait() -> None:
    meter = MeasuredDelays(tau_s=30.0)
    for step in range(1, 100):
        meter.update(float(step), _obs(step, {"x": LaneObservation(vehicles=8, queue=8)}))
    assert 500 <= meter.lane_delay_s("x") <= 600
    with pytest.raises(ValueError, match="tau_s"):
        MeasuredDelays(tau_s=0)


def test_movements_take_the_mean_of_the_lanes_that_serve_them() -> None:
    inter = SignalIntersection(
        "J",
        links=(
            Link(0, "west_0", "east_0"), Link(1, "west_1", "east_1"),
            Link(2, "west_1", "north_0", direction="l"), Link(3, "", "", pedestrian=True),
        ),
        conflicts=frozenset(),
        green_phases=("GGGr", "rrrG"),
    )  # fmt: skip
    lane_edge = {"west_0": "west", "west_1": "west", "east_0": "east", "east_1": "east",
                 "north_0": "north"}  # fmt: skip
    lanes_of = movement_lanes([inter], lane_edge)
    assert lanes_of == {("west", "east"): ("west_0", "west_1"), ("west", "north"): ("west_1",)}
    meter = MeasuredDelays(tau_s=10.0)
    for step in range(1, 200):
        meter.update(float(step), _obs(step, {
            "west_0": LaneObservation(vehicles=1, departures=1),
            "west_1": LaneObservation(vehicles=20, queue=20, departures=step % 2),
        }))  # fmt: skip
    delays = meter.movement_delays(lanes_of)
    slow = meter.lane_delay_s("west_1")
    assert slow > 20
    assert delays[("west", "north")] == pytest.approx(slow)
    assert delays[("west", "east")] == pytest.approx(slow / 2)
