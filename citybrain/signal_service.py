"""The fixed-time planner service: forecasts in, safe signal plans out.

For every intersection with a signal configuration, the lane forecasts of the next
``plan_horizon_min`` minutes (``cb:forecasts``, written by ``citybrain forecast serve``)
size a Webster plan; intersections on a configured artery then share one cycle with
green-wave offsets.  Each plan is proposed (an operator approves it through the API) or,
with ``auto_approve``, put in force at once; either way it is audited as the planner's.
An intersection whose lanes have no forecast keeps its plan, and the service says why.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import redis

from citybrain.config import SignalsConfig
from citybrain.forecast.online import stored_forecasts
from citybrain.intersections import IntersectionStore
from citybrain.signal_plans import PlanError, PlanSpec, SignalPlanStore
from citybrain.signals.coordination import Artery, green_wave
from citybrain.signals.plans import FixedPlan
from citybrain.signals.webster import webster_plan

log = logging.getLogger("citybrain.signals.planner")
ACTOR = "planner"


@dataclass(frozen=True)
class PlanOutcome:
    intersection: str
    action: str  # proposed, applied, skipped
    reason: str
    cycle_s: float | None = None


def lane_flows(client: redis.Redis, lanes: tuple[str, ...], horizon_min: int) -> dict:
    """Mean forecast flow (veh/h) of each lane over the horizon; lanes without one left out."""
    flows: dict[str, float] = {}
    for f in stored_forecasts(client, list(lanes)):
        steps = max(1, math.ceil(horizon_min * 60 / f["bin_s"]))
        values = [v for v in f["flows_veh_h"][:steps] if math.isfinite(v) and v >= 0]
        if values:
            flows[f["detector"]] = sum(values) / len(values)
    return flows


def plan_once(client: redis.Redis, cfg: SignalsConfig) -> list[PlanOutcome]:
    store = SignalPlanStore(client)
    plans: dict[str, FixedPlan] = {}
    inters, rules, notes = {}, {}, {}
    outcomes: list[PlanOutcome] = []
    for iid in IntersectionStore(client).ids():
        config = store.config(iid)
        if config is None:
            continue
        inter = config.intersection(iid)
        lanes = inter.incoming_lanes
        flows = lane_flows(client, lanes, cfg.plan_horizon_min)
        if not flows:
            outcomes.append(PlanOutcome(iid, "skipped", "no lane has a forecast"))
            log.warning("%s: no lane has a forecast; the active plan stays", iid)
            continue
        inters[iid], rules[iid] = inter, config.safety_rules()
        plans[iid] = webster_plan(inter, rules[iid], flows)
        missing = len(lanes) - len(flows)
        notes[iid] = f"Webster on {cfg.plan_horizon_min} min of forecasts" + (
            f"; {missing} of {len(lanes)} lanes without one" if missing else ""
        )
    for artery in cfg.arteries:
        if not all(i in plans for i in artery.intersections):
            log.warning("artery %s: not every intersection was planned; no green wave",
                        "-".join(artery.intersections))  # fmt: skip
            continue
        wave = Artery(tuple(artery.intersections), tuple(artery.distances_m),
                      artery.speed_kmh / 3.6, tuple(artery.main_phases))  # fmt: skip
        plans.update(green_wave(wave, plans, inters, rules))
        for iid in artery.intersections:
            notes[iid] += f"; green wave at {artery.speed_kmh:g} km/h"
    for iid, plan in plans.items():
        spec = PlanSpec.of(plan).model_copy(update={"source": "webster-forecast"})
        try:
            store.propose(iid, spec, ACTOR, notes[iid])
            if cfg.auto_approve:
                store.approve(iid, ACTOR, "auto-approve")
        except PlanError as exc:  # the model changed under us: keep the active plan
            outcomes.append(PlanOutcome(iid, "skipped", str(exc)))
            continue
        action = "applied" if cfg.auto_approve else "proposed"
        outcomes.append(PlanOutcome(iid, action, notes[iid], plan.cycle_s(inters[iid], rules[iid])))
    return outcomes


def run_planner(
    client: redis.Redis, cfg: SignalsConfig, stop: threading.Event, once: bool = False
) -> None:
    while not stop.is_set():
        for o in plan_once(client, cfg):
            log.info("%s: %s (%s)", o.intersection, o.action, o.reason)
        if once:
            return
        stop.wait(cfg.plan_interval_s)
