"""The planner service: forecasts in Redis -> Webster plans proposed or applied, audited."""

from __future__ import annotations

import orjson

from citybrain.config import SignalsConfig
from citybrain.forecast.online import FORECASTS_HASH
from citybrain.intersections import Intersection, IntersectionStore
from citybrain.signal_plans import SignalConfig, SignalPlanStore
from citybrain.signal_service import plan_once
from tests.test_api_center import INTERSECTION
from tests.test_api_signals import SIGNALS


def _forecast(client, detector: str, flow: float) -> None:
    client.hset(FORECASTS_HASH, detector, orjson.dumps({
        "detector": detector, "generated_ms": 0, "bin_s": 300, "method": "model",
        "reason": None, "flows_veh_h": [flow] * 12,
    }))  # fmt: skip


def _setup(client, iid: str) -> None:
    IntersectionStore(client).put(Intersection.model_validate({**INTERSECTION, "id": iid}))
    SignalPlanStore(client).put_config(iid, SignalConfig.model_validate(SIGNALS), "test")


def test_forecasts_become_proposals_and_busier_forecasts_longer_cycles(redis_client) -> None:
    _setup(redis_client, "x-1")
    _setup(redis_client, "x-2")
    for lane, flow in (("S1", 500), ("S2", 450), ("N1", 300)):
        _forecast(redis_client, f"rsu-x/cam0/{lane}", flow)
    outcomes = {o.intersection: o for o in plan_once(redis_client, SignalsConfig())}
    # Both configs point at the same lanes, so both are planned alike.
    assert outcomes["x-1"].action == "proposed" and outcomes["x-1"].cycle_s
    store = SignalPlanStore(redis_client)
    record = store.record("x-1")
    assert record.mode == "fixed" and record.proposed.source == "webster-forecast"
    light_cycle = outcomes["x-1"].cycle_s
    for lane, flow in (("S1", 900), ("S2", 850), ("N1", 500)):
        _forecast(redis_client, f"rsu-x/cam0/{lane}", flow)
    heavy = {o.intersection: o for o in plan_once(redis_client, SignalsConfig(auto_approve=True))}
    assert heavy["x-1"].action == "applied" and heavy["x-1"].cycle_s > light_cycle
    assert store.record("x-1").mode == "planned"
    actions = [e["action"] for e in store.audit_log("x-1")]
    assert actions[:3] == ["approve", "propose", "propose"]
    assert {e["actor"] for e in store.audit_log("x-1")[:3]} == {"planner"}


def test_green_wave_and_missing_forecasts(redis_client) -> None:
    _setup(redis_client, "x-1")
    _setup(redis_client, "x-2")
    _setup(redis_client, "x-3")
    for lane, flow in (("S1", 700), ("S2", 650), ("N1", 400)):
        _forecast(redis_client, f"rsu-x/cam0/{lane}", flow)
    # x-3 has lanes nobody forecasts.
    store = SignalPlanStore(redis_client)
    other = {**SIGNALS, "links": [{**lk, "from_lane": lk["from_lane"].replace("rsu-x", "rsu-y")}
                                  for lk in SIGNALS["links"]]}  # fmt: skip
    store.put_config("x-3", SignalConfig.model_validate(other), "test")
    cfg = SignalsConfig.model_validate({"arteries": [{
        "intersections": ["x-1", "x-2"], "distances_m": [250], "speed_kmh": 45,
        "main_phases": [0, 0]}]})  # fmt: skip
    outcomes = {o.intersection: o for o in plan_once(redis_client, cfg)}
    assert (
        outcomes["x-3"].action == "skipped" and "no lane has a forecast" in outcomes["x-3"].reason
    )
    one, two = store.record("x-1").proposed, store.record("x-2").proposed
    # Same cycle, and x-2's main green starts 20 s (250 m at 12.5 m/s) after x-1's.
    assert (two.offset_s - one.offset_s) % outcomes["x-1"].cycle_s == 20.0
    assert "green wave" in outcomes["x-2"].reason


def test_cli_plans_once_and_says_what_it_did(redis_url, redis_client) -> None:
    import subprocess
    import sys

    _setup(redis_client, "x-1")
    _forecast(redis_client, "rsu-x/cam0/S1", 600)
    out = subprocess.run(
        [sys.executable, "-m", "citybrain.cli", "signals", "plan", "--once",
         "--redis-url", redis_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.startswith("x-1: proposed, cycle ")
    assert "2 of 3 lanes without one" in out.stdout
