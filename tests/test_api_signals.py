"""Signal plans through the API: config, SPaT, proposals, approval, override, revert, audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.config import CitybrainConfig
from citybrain.signal_plans import PlanSpec, SignalConfig, spat
from tests.conftest import api_client
from tests.test_api_center import INTERSECTION

# South approach (two lanes) against north: through movements S1->N, S2->N, N1->S; the
# north left turn N1->E crosses both south lanes.
SIGNALS = {
    "links": [
        {"index": 0, "from_lane": "rsu-x/cam0/S1", "to_lane": "rsu-x/cam0/Nout"},
        {"index": 1, "from_lane": "rsu-x/cam0/S2", "to_lane": "rsu-x/cam0/Nout"},
        {"index": 2, "from_lane": "rsu-x/cam0/N1", "to_lane": "rsu-x/cam0/Sout"},
        {"index": 3, "from_lane": "rsu-x/cam0/N1", "to_lane": "rsu-x/cam0/Eout",
         "direction": "l"},
    ],
    "conflicts": [[0, 3], [1, 3]],
    "green_phases": ["GGGg", "rrrG"],
    "rules": {"min_green_s": 6, "yellow_s": 3, "all_red_s": 2},
}  # fmt: skip


@pytest.fixture
def config(redis_url: str, tmp_path: Path) -> CitybrainConfig:
    return CitybrainConfig.model_validate(
        {"bus": {"redis_url": redis_url}, "history": {"url": f"sqlite:///{tmp_path}/h.db"}}
    )


def plan(*greens: float, offset: float = 0.0) -> dict:
    return {"stages": [{"phase": k, "green_s": g} for k, g in enumerate(greens)],
            "offset_s": offset}  # fmt: skip


def test_signal_plan_lifecycle_is_safe_and_audited(config, redis_client) -> None:
    viewer = api_client(config, "viewer", redis_client)
    operator = api_client(config, "operator", redis_client)
    assert operator.put("/intersections/x-1", json=INTERSECTION).status_code == 201
    assert viewer.put("/intersections/x-1/signal-config", json=SIGNALS).status_code == 403
    assert operator.put("/intersections/x-1/signal-config", json=SIGNALS).status_code == 201

    current = viewer.get("/intersections/x-1/signal-plan").json()
    assert current["record"]["mode"] == "fixed"
    stages = current["record"]["active"]["stages"]
    assert [s["phase"] for s in stages] == [0, 1] and all(s["green_s"] >= 6 for s in stages)
    assert current["spat"]["state"] in ("GGGg", "rrrG", "yyyy", "rrrr", "GGrr", "rrry",
                                        "yyyg", "rrrg", "GGGr")  # fmt: skip
    assert 0 < current["spat"]["time_to_change_s"] <= current["spat"]["cycle_s"]

    unsafe = operator.post("/intersections/x-1/signal-plan/proposal",
                           json={"plan": plan(30, 4)})  # fmt: skip
    assert unsafe.status_code == 422 and "min green is 6 s" in unsafe.json()["detail"]
    assert unsafe.headers["content-type"] == "application/problem+json"
    nothing = operator.post("/intersections/x-1/signal-plan/approve", json={})
    assert nothing.status_code == 409 and "no proposed plan" in nothing.json()["detail"]

    proposed = operator.post("/intersections/x-1/signal-plan/proposal",
                             json={"plan": plan(40, 12), "reason": "evening peak"})  # fmt: skip
    assert proposed.status_code == 200
    assert proposed.json()["record"]["proposed"]["stages"][0]["green_s"] == 40
    assert viewer.post("/intersections/x-1/signal-plan/approve", json={}).status_code == 403
    approved = operator.post("/intersections/x-1/signal-plan/approve",
                             json={"reason": "checked"}).json()  # fmt: skip
    assert approved["record"]["mode"] == "planned"
    assert approved["record"]["active"]["stages"][0]["green_s"] == 40
    # cycle: 40 + 3 + 2 + 12 + 3 + 2
    assert approved["spat"]["cycle_s"] == 62

    no_reason = operator.post("/intersections/x-1/signal-plan/override",
                              json={"plan": plan(20, 20)})  # fmt: skip
    assert no_reason.status_code == 422
    overridden = operator.post(
        "/intersections/x-1/signal-plan/override",
        json={"plan": plan(20, 20), "reason": "crash on north leg"},
    )
    assert overridden.json()["record"]["mode"] == "override"
    reverted = operator.post("/intersections/x-1/signal-plan/revert", json={}).json()
    assert reverted["record"]["mode"] == "planned"
    assert reverted["record"]["active"]["stages"][0]["green_s"] == 40

    assert viewer.get("/signal-audit").status_code == 403
    audit = operator.get("/signal-audit", params={"intersection": "x-1"}).json()["items"]
    assert [e["action"] for e in audit] == ["revert", "override", "approve", "propose", "config"]
    assert all(e["actor"].startswith("test operator") for e in audit)
    assert audit[1]["reason"] == "crash on north leg"
    assert audit[1]["plan"]["stages"][1]["green_s"] == 20


def test_signal_config_errors_name_the_problem(config, redis_client) -> None:
    operator = api_client(config, "operator", redis_client)
    assert operator.put("/intersections/x-1", json=INTERSECTION).status_code == 201
    clash = {**SIGNALS, "green_phases": ["GGGG", "rrrG"]}
    bad = operator.put("/intersections/x-1/signal-config", json=clash)
    assert bad.status_code == 422 and "links 0 and 3" in bad.text
    assert operator.put("/intersections/nope/signal-config", json=SIGNALS).status_code == 404
    assert operator.get("/intersections/x-1/signal-plan").status_code == 404
    assert operator.post("/intersections/x-1/signal-plan/revert", json={}).status_code == 404


def test_spat_walks_through_green_yellow_and_all_red() -> None:
    cfg = SignalConfig.model_validate(SIGNALS)
    inter, rules = cfg.intersection("x-1"), cfg.safety_rules()
    p = PlanSpec.model_validate(plan(20, 10, offset=5)).to_plan("x-1")
    at = lambda t: spat(p, inter, rules, int(t * 1000))  # noqa: E731
    assert (at(5).state, at(5).phase, at(5).time_to_change_s) == ("GGGg", 0, 20)
    assert (at(26).state, at(26).phase, at(26).time_to_change_s) == ("yyyg", None, 2)
    assert (at(28.5).state, at(28.5).time_to_change_s) == ("rrrg", 1.5)
    assert (at(30).state, at(30).phase, at(30).next_phase) == ("rrrG", 1, 0)
    # The protected left then turns permitted: its yellow arrow and all-red first.
    assert (at(41).state, at(44).state, at(45).state) == ("rrry", "rrrr", "GGGg")  # cycle 40 s
