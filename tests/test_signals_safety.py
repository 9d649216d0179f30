"""Signal safety: the checker catches every broken rule, and nothing we emit breaks one.

Property tests run the planners, the fixed-plan fallback and Webster's plans over random
intersections, rules and (sometimes stale, missing or absurd) observations; every schedule
the signal head produced must pass ``check_schedule``.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citybrain.signals.adaptive import AdaptivePlanner
from citybrain.signals.controller import IntersectionController
from citybrain.signals.head import SignalHead
from citybrain.signals.intersection import IntersectionError, Link, SignalIntersection
from citybrain.signals.maxpressure import MaxPressurePlanner
from citybrain.signals.observation import IntersectionObservation, LaneObservation
from citybrain.signals.plans import FixedPlan, Stage
from citybrain.signals.safety import SafetyRules, SafetyViolation, check_schedule, transition
from citybrain.signals.webster import webster_plan

# A four-leg intersection: links 0-1 north-south through, 2-3 east-west through,
# 4 north left (permitted in phase 0, protected in phase 1).
LINKS = (
    Link(0, "n_in", "s_out"),
    Link(1, "s_in", "n_out"),
    Link(2, "e_in", "w_out"),
    Link(3, "w_in", "e_out"),
    Link(4, "n_left", "e_out", direction="l"),
)
CROSS = frozenset({(0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (2, 4)})
X = SignalIntersection(
    id="x1",
    links=LINKS,
    conflicts=CROSS,
    green_phases=("GGrrg", "rrrrG", "rrGGr"),
)
RULES = SafetyRules(min_green_s=5, max_green_s=40, yellow_s=3, all_red_s=2)


def test_model_rejects_conflicting_protected_greens() -> None:
    with pytest.raises(IntersectionError, match="links 1 and 4"):
        SignalIntersection("bad", LINKS, CROSS, ("GGrrG",))
    with pytest.raises(IntersectionError, match="5 links"):
        SignalIntersection("bad", LINKS, CROSS, ("GGr",))
    with pytest.raises(IntersectionError, match="yellow"):
        SignalIntersection("bad", LINKS, CROSS, ("Gyrrr",))


def test_transition_runs_yellow_then_all_red() -> None:
    steps = transition("GGrrg", "rrGGr", RULES)
    assert steps == [("yyrry", 3.0), ("rrrrr", 2.0)]
    # Links green on both sides stay green through the change.
    assert transition("GGrrg", "rrrrG", RULES) == [("yyrrg", 3.0), ("rrrrg", 2.0)]
    # A protected left turning permitted gets its yellow (arrow) too.
    assert transition("rrrrG", "GGrrg", RULES) == [("rrrry", 3.0), ("rrrrr", 2.0)]


GOOD = [("GGrrg", 10), ("yyrry", 3), ("rrrrr", 2), ("rrGGr", 10), ("rrYYr".lower(), 3),
        ("rrrrr", 2), ("GGrrg", 10)]  # fmt: skip


def test_a_correct_schedule_passes() -> None:
    check_schedule(X, RULES, GOOD)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([("GGrrg", 10), ("rrGGr", 10), ("GGrrg", 5)], "without yellow"),
        (
            [("GGrrg", 10), ("yyrry", 2), ("rrrrr", 2), ("rrGGr", 10), ("rrrrr", 1)],
            "yellow for 2 s",
        ),
        ([("GGrrg", 10), ("yyrry", 3), ("rrrrr", 1), ("rrGGr", 10), ("rryyr", 3)], "all-red 2 s"),
        ([("GGrrg", 10), ("yyrry", 3), ("rrGGr", 10), ("rryyr", 3)], "clears until"),
        (
            [
                ("GGrrg", 10),
                ("yyrry", 3),
                ("rrrrr", 2),
                ("rrGGr", 3),
                ("rryyr", 3),
                ("rrrrr", 2),
                ("GGrrg", 5),
            ],
            "min green",
        ),
        ([("GGGrr", 10)], "whose paths cross"),
        ([("rrrrG", 10), ("GGrrg", 10)], "drops from protected to permitted"),
    ],
)
def test_the_checker_catches_each_broken_rule(schedule, message) -> None:
    with pytest.raises(SafetyViolation, match=message):
        check_schedule(X, RULES, schedule)


def test_pedestrian_crossing_lengthens_min_green() -> None:
    links = (*LINKS, Link(5, "c0", "c0_out", pedestrian=True, crossing_length_m=12.0))
    inter = SignalIntersection("xp", links, CROSS | {(2, 5), (3, 5)},
                               ("GGrrgG", "rrrrGr", "rrGGrr"))  # fmt: skip
    rules = SafetyRules(min_green_s=5, yellow_s=3, all_red_s=1, ped_walk_s=7, ped_speed_mps=1.2)
    assert rules.phase_min_green_s(inter, 0) == pytest.approx(17.0)
    head = SignalHead(inter, rules, initial_phase=0)
    for _ in range(17):
        assert not head.request(2)
        head.tick(1)
    assert head.request(2)


def test_head_refuses_early_changes_and_inserts_transitions() -> None:
    head = SignalHead(X, RULES, initial_phase=0)
    for _ in range(4):
        assert not head.request(2), "min green is 5 s"
        head.tick(1)
    head.tick(1)
    assert head.request(2)
    shown = []
    for _ in range(8):
        shown.append(head.state)
        head.tick(1)
    assert shown == ["yyrry"] * 3 + ["rrrrr"] * 2 + ["rrGGr"] * 3
    assert head.status().phase == 2
    check_schedule(X, RULES, head.recent_schedule())


# ---------------------------------------------------------------- property tests


@st.composite
def intersections(draw) -> SignalIntersection:
    n = draw(st.integers(2, 10))
    lanes_in = [f"in{k}" for k in range(draw(st.integers(1, n)))]
    links = tuple(
        Link(i, draw(st.sampled_from(lanes_in)), f"out{draw(st.integers(0, 3))}") for i in range(n)
    )
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    conflicts = frozenset(p for p in pairs if draw(st.booleans()))
    phases: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        order = draw(st.permutations(range(n)))
        protected: set[int] = set()
        state = ["r"] * n
        for i in order[: draw(st.integers(1, n))]:
            if all((min(i, j), max(i, j)) not in conflicts for j in protected):
                protected.add(i)
                state[i] = "G"
            elif draw(st.booleans()):
                state[i] = "g"  # permitted: yields to the protected ones
        s = "".join(state)
        if s not in phases:
            phases.append(s)
    return SignalIntersection("rand", links, conflicts, tuple(phases))


rules_strategy = st.builds(
    SafetyRules,
    min_green_s=st.integers(1, 15).map(float),
    max_green_s=st.integers(15, 90).map(float),
    yellow_s=st.integers(2, 6).map(float),
    all_red_s=st.integers(0, 4).map(float),
)


@st.composite
def observations(draw, inter: SignalIntersection, t: float):
    kind = draw(st.sampled_from(["good"] * 6 + ["none", "stale", "absurd"]))
    if kind == "none":
        return None
    lanes = {}
    for lane in inter.incoming_lanes:
        vehicles = draw(st.integers(0, 25))
        queue = draw(st.integers(0, vehicles))
        etas = tuple(sorted(draw(st.lists(st.floats(0, 30), max_size=vehicles - queue))))
        lanes[lane] = LaneObservation(vehicles, queue, float(draw(st.integers(0, 200))), etas)
    if kind == "absurd":
        lanes[inter.incoming_lanes[0]] = LaneObservation(vehicles=3, queue=9)
    out = {lane: LaneObservation(vehicles=(v := draw(st.integers(0, 10))), queue=v)
           for lane in inter.outgoing_lanes}  # fmt: skip
    time_s = t - 60 if kind == "stale" else t
    return IntersectionObservation(inter.id, time_s, 120.0, lanes, out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), inter=intersections(), rules=rules_strategy,
       planner=st.sampled_from(["adaptive", "maxpressure", "fixed"]))  # fmt: skip
def test_no_controller_ever_emits_an_unsafe_schedule(data, inter, rules, planner) -> None:
    flows = {lane: data.draw(st.floats(0, 2500)) for lane in inter.incoming_lanes}
    plan = webster_plan(inter, rules, flows)
    kinds = {"adaptive": AdaptivePlanner, "maxpressure": MaxPressurePlanner}
    p = kinds[planner](inter, rules) if planner in kinds else None
    ctl = IntersectionController(inter, rules, p, plan)
    for t in range(240):
        obs = data.draw(observations(inter, float(t))) if t % 3 == 0 else None
        ctl.step(float(t), obs if obs is not None or t % 3 else None)
        ctl.tick(1.0)
    check_schedule(inter, rules, ctl.head.recent_schedule())


@settings(max_examples=80, deadline=None)
@given(inter=intersections(), rules=rules_strategy, data=st.data())
def test_webster_plans_are_safe_and_bounded(inter, rules, data) -> None:
    flows = {lane: data.draw(st.floats(0, 3000)) for lane in inter.incoming_lanes}
    plan = webster_plan(inter, rules, flows)
    plan.validate(inter, rules)
    need = sum(rules.phase_min_green_s(inter, k) for k in range(len(inter.green_phases)))
    cycle = plan.cycle_s(inter, rules)
    assert cycle <= max(rules.max_cycle_s, need + len(inter.green_phases) * 10) + 1e-6
    for stage in plan.stages:
        assert stage.green_s >= rules.phase_min_green_s(inter, stage.phase)
        assert math.isfinite(stage.green_s)


def test_webster_gives_the_busier_phase_more_green_and_longer_cycles_to_more_traffic() -> None:
    light = webster_plan(X, RULES, {"n_in": 200, "s_in": 200, "e_in": 100, "w_in": 100})
    heavy = webster_plan(X, RULES, {"n_in": 700, "s_in": 700, "e_in": 300, "w_in": 300,
                                    "n_left": 150})  # fmt: skip
    assert heavy.cycle_s(X, RULES) > light.cycle_s(X, RULES)
    greens = {s.phase: s.green_s for s in heavy.stages}
    assert greens[0] > greens[2] > RULES.min_green_s


def test_fixed_plan_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match=r"phase\(s\) \[1\] are never served"):
        FixedPlan("x1", (Stage(0, 20), Stage(2, 20))).validate(X, RULES)
    with pytest.raises(SafetyViolation, match="min green"):
        FixedPlan("x1", (Stage(0, 20), Stage(1, 2), Stage(2, 20))).validate(X, RULES)


def _obs(t: float, **lanes: LaneObservation) -> IntersectionObservation:
    base = {lane: LaneObservation() for lane in X.incoming_lanes}
    base.update(lanes)
    return IntersectionObservation("x1", t, 120.0, base, {})


def test_controller_falls_back_on_stale_missing_or_absurd_data_and_recovers() -> None:
    plan = webster_plan(X, RULES, {})
    ctl = IntersectionController(X, RULES, AdaptivePlanner(X, RULES), plan, stale_after_s=5)
    ctl.step(0.0, _obs(0.0))
    assert ctl.mode == "citybrain"
    ctl.step(10.0, _obs(2.0))
    assert (ctl.mode, ctl.reason) == ("fallback", "observation is 8 s old (stale after 5 s)")
    ctl.step(11.0, None)
    assert ctl.reason == "no observation"
    ctl.step(12.0, _obs(12.0, e_in=LaneObservation(vehicles=2, queue=5)))
    assert "queue 5 above vehicles 2" in ctl.reason
    for t in (13.0, 14.0):
        ctl.step(t, _obs(t))
        assert ctl.mode == "fallback", "needs 3 good observations in a row"
    ctl.step(15.0, _obs(15.0))
    assert ctl.mode == "citybrain"


def test_adaptive_extends_while_traffic_flows_then_serves_the_waiting_phase() -> None:
    head = SignalHead(X, RULES, initial_phase=0)
    planner = AdaptivePlanner(X, RULES, gap_s=3)
    for _ in range(6):
        head.tick(1)
    flowing = _obs(6, n_in=LaneObservation(vehicles=3, etas_s=(1.5, 4.0, 9.0)),
                   e_in=LaneObservation(vehicles=4, queue=4, max_wait_s=20))  # fmt: skip
    assert planner.decide(flowing, head).reason == "extend"
    gapped = _obs(7, n_in=LaneObservation(vehicles=1, etas_s=(9.0,)),
                  e_in=LaneObservation(vehicles=4, queue=4, max_wait_s=21))  # fmt: skip
    decision = planner.decide(gapped, head)
    assert (decision.phase, decision.reason) == (2, "gap out")
    nobody = _obs(7, n_in=LaneObservation(vehicles=1, etas_s=(9.0,)))
    assert planner.decide(nobody, head).reason == "rest in green"


def test_max_pressure_prefers_the_phase_with_more_waiting_and_free_exits() -> None:
    head = SignalHead(X, RULES, initial_phase=0)
    for _ in range(6):
        head.tick(1)
    planner = MaxPressurePlanner(X, RULES)
    obs = IntersectionObservation(
        "x1", 6.0, 120.0,
        {"n_in": LaneObservation(5, 5), "s_in": LaneObservation(5, 5),
         "e_in": LaneObservation(8, 8), "w_in": LaneObservation(8, 8),
         "n_left": LaneObservation()},
        {"w_out": LaneObservation(10, 10), "e_out": LaneObservation(10, 10)},
    )  # fmt: skip
    # Phase 2 has 16 waiting but both its exits are jammed: 16 - 20 < 10.
    assert planner.decide(obs, head).phase == 0


def test_green_wave_offsets_follow_travel_time_on_a_common_cycle() -> None:
    from citybrain.signals.coordination import Artery, green_wave, main_green_start

    short = webster_plan(X, RULES, {"n_in": 300, "e_in": 300})
    long = webster_plan(X, RULES, {"n_in": 900, "s_in": 800, "e_in": 500})
    artery = Artery(("a", "b", "c"), (300.0, 450.0), 15.0, (0, 0, 0))
    plans = green_wave(artery, {"a": long, "b": short, "c": short},
                       {k: X for k in "abc"}, {k: RULES for k in "abc"})  # fmt: skip
    cycle = long.cycle_s(X, RULES)
    for k in "abc":
        plans[k].validate(X, RULES)
        assert plans[k].cycle_s(X, RULES) == pytest.approx(cycle)
    # The main green starts 20 s (300 m at 15 m/s) later at b, 30 s after that at c.
    starts = {k: plans[k].offset_s + main_green_start(plans[k], 0, X, RULES) for k in "abc"}
    assert (starts["b"] - starts["a"]) % cycle == pytest.approx(20.0, abs=0.1)
    assert (starts["c"] - starts["b"]) % cycle == pytest.approx(30.0, abs=0.1)
    with pytest.raises(ValueError, match="2 distances"):
        Artery(("a", "b", "c"), (300.0,), 15.0, (0, 0, 0))


def test_all_red_is_held_while_a_conflicting_road_user_is_still_in_the_box() -> None:
    rules = SafetyRules(min_green_s=5, yellow_s=3, all_red_s=1, max_clearance_hold_s=4)
    head = SignalHead(X, rules, initial_phase=0)
    for _ in range(5):
        head.tick(1)
    assert head.request(2)
    shown = []
    # A car on link 0 (north-south through) is stuck in the junction the whole time: link 2
    # (east-west) crosses it, so the change to phase 2 waits, but only 4 s longer.
    for _ in range(12):
        shown.append(head.state)
        head.tick(1, in_box={0: 1})
    assert shown == ["yyrry"] * 3 + ["rrrrr"] * 5 + ["rrGGr"] * 4
    assert head.clearance_holds == 1
    check_schedule(X, rules, head.recent_schedule())
    # A car on link 3 (same direction as the new green) holds nothing.
    head2 = SignalHead(X, rules, initial_phase=0)
    for _ in range(5):
        head2.tick(1)
    head2.request(2)
    for _ in range(4):
        head2.tick(1, in_box={3: 2})
    assert head2.state == "rrGGr"


def test_turning_counts_split_a_shared_lane_between_phases() -> None:
    # Lane "a" carries a through movement (link 0) and a left turn (link 1, permitted in
    # phase 0, protected in phase 1); lane "b" is the oncoming through (link 2).
    inter = SignalIntersection(
        "shared",
        (Link(0, "a", "x"), Link(1, "a", "y", "l"), Link(2, "b", "z")),
        frozenset({(1, 2)}),
        ("GgG", "rGr"),
    )
    planner = AdaptivePlanner(inter, RULES, permitted_weight=0.5)
    assert planner.served_share("a", 1) == pytest.approx(0.5)  # no counts yet: even split
    obs = IntersectionObservation("shared", 0.0, 120.0, {"a": LaneObservation(), "b":
                                  LaneObservation()}, departures_by_link={0: 9, 1: 1})  # fmt: skip
    head = SignalHead(inter, RULES)
    planner.decide(obs, head)
    # 10 through against 2 left (each with its prior of 1): the left phase serves 1/6.
    assert planner.served_share("a", 1) == pytest.approx(2 / 12)
    assert planner.served_share("a", 0) == pytest.approx((10 + 2 * 0.5) / 12)


def test_adaptive_cuts_a_flowing_green_for_a_long_wait_and_ignores_blocked_exits() -> None:
    head = SignalHead(X, RULES, initial_phase=0)
    for _ in range(10):
        head.tick(1)
    planner = AdaptivePlanner(X, RULES, gap_s=3, patience_s=60, blocked_within_m=10)
    flowing = LaneObservation(vehicles=2, etas_s=(1.0, 2.5))
    short = _obs(10, n_in=flowing, e_in=LaneObservation(vehicles=1, queue=1, max_wait_s=30))
    assert planner.decide(short, head).reason == "extend"
    long = _obs(10, n_in=flowing, e_in=LaneObservation(vehicles=1, queue=1, max_wait_s=61))
    assert (planner.decide(long, head).phase, planner.decide(long, head).reason) == (
        2,
        "waited long enough",
    )
    # East-west queues, but their exit is full to 4 m from the junction: not demand.
    jammed = IntersectionObservation(
        "x1", 10.0, 120.0,
        {**_obs(10).incoming, "n_in": LaneObservation(vehicles=1, etas_s=(9.0,)),
         "e_in": LaneObservation(vehicles=5, queue=5, max_wait_s=20)},
        {"w_out": LaneObservation(vehicles=8, queue=8, stopped_from_junction_m=4.0)},
    )  # fmt: skip
    assert planner.decide(jammed, head).reason == "rest in green"


def test_webster_never_overshoots_the_cycle_when_greens_hit_both_bounds() -> None:
    # Found by hypothesis: two phases capped at max green and one at its minimum summed to
    # more than the cycle allowed.
    rules = SafetyRules(min_green_s=5, max_green_s=22, yellow_s=3, all_red_s=2, max_cycle_s=60)
    plan = webster_plan(X, rules, {"n_in": 2000, "s_in": 2000, "e_in": 2000, "w_in": 2000})
    plan.validate(X, rules)
    assert plan.cycle_s(X, rules) <= 60 + 1e-6
    assert [s.green_s for s in plan.stages][1] == 5
