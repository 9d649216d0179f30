"""Run a SUMO scenario under a signal controller and measure RESCO's metrics.

Controllers:

- ``fixed``: the program shipped in the net, untouched.
- ``maxpressure``: our max-pressure planner.
- ``citybrain``: the adaptive planner, with a Webster plan from measured flows as its safe
  fallback, re-planned every ``replan_s``.

Both planners see only ``SumoSensing``'s camera-range observations.  Metrics follow RESCO:
delay is the mean over vehicles of time loss plus departure delay, counting vehicles still
driving at the end and those never inserted (time from their scheduled departure); trip
time is the mean duration of completed trips; waiting time the mean time stopped; queue the
mean number of halting vehicles per controlled intersection over the run.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from citybrain.config import SignalsConfig
from citybrain.signals.adaptive import AdaptivePlanner
from citybrain.signals.controller import IntersectionController
from citybrain.signals.intersection import SignalIntersection
from citybrain.signals.maxpressure import MaxPressurePlanner
from citybrain.signals.safety import SafetyRules, check_schedule
from citybrain.signals.webster import webster_plan
from citybrain.sim.sensing import SumoSensing
from citybrain.sim.sumo_env import import_libsumo
from citybrain.sim.sumo_net import NetError, ShippedProgram, intersections_from_net, read_net
from citybrain.sim.virtual_rsu import subscribe_new, sumo_vehicles

CONTROLLERS = ("fixed", "maxpressure", "citybrain")
# RESCO's evaluation windows (scenario name prefix -> begin, end).
RESCO_WINDOWS = {"cologne": (25200, 28800), "ingolstadt": (57600, 61200)}
DEFAULT_WINDOW = (0, 3600)


class ScenarioError(ValueError):
    """The scenario folder is not a runnable SUMO scenario; the message says what is missing."""


@dataclass(frozen=True)
class Scenario:
    name: str
    directory: Path
    sumocfg: Path
    net: Path
    begin: int
    end: int


def load_scenario(directory: str | Path, begin: int | None = None, end: int | None = None):
    d = Path(directory)
    if not d.is_dir():
        raise ScenarioError(f"scenario folder not found: {d}")
    cfgs = sorted(d.glob("*.sumocfg"))
    if not cfgs:
        raise ScenarioError(f"no .sumocfg in {d}")
    cfg = cfgs[0]
    try:
        root = ET.parse(cfg).getroot()
    except ET.ParseError as exc:
        raise ScenarioError(f"{cfg}: not valid XML: {exc}") from None
    net_el = root.find("./input/net-file")
    if net_el is None:
        raise ScenarioError(f"{cfg}: no <net-file>")
    net = (cfg.parent / net_el.get("value", "")).resolve()
    if not net.exists():
        raise ScenarioError(f"{cfg}: net file {net} does not exist")
    name = d.resolve().name
    window = next((w for p, w in RESCO_WINDOWS.items() if name.startswith(p)), None)
    if window is None:
        b = root.find("./time/begin")
        e = root.find("./time/end")
        window = (
            int(float(b.get("value", 0))) if b is not None else DEFAULT_WINDOW[0],
            int(float(e.get("value", 3600))) if e is not None else DEFAULT_WINDOW[1],
        )
    begin = window[0] if begin is None else begin
    end = window[1] if end is None else end
    if end <= begin:
        raise ScenarioError(f"{name}: end {end} is not after begin {begin}")
    return Scenario(name, d.resolve(), cfg.resolve(), net, begin, end)


@dataclass
class RunResult:
    scenario: str
    controller: str
    seed: int
    delay: float
    trip_time: float
    waiting_time: float
    queue: float
    vehicles: int
    completed: int
    wall_s: float
    fallback_steps: int = 0
    clearance_holds: int = 0  # changes that waited for road users to leave the junction box
    bus_messages: int = 0  # twin: messages the virtual RSUs published
    bus_rsus: int = 0
    bus_sync_waits: int = 0  # twin: steps where ingest had not caught up within the timeout
    bus_undrained: int = 0  # twin: entries ingest had not acked 30 s after the run
    clearance: str = "shipped"
    delay_series: list[float] = field(default_factory=list)  # mean delay of trips ending per bin
    # Routed vehicles (reroute_share > 0): how many were due within the run, how many left
    # on another route than the scenario's, how many arrived, and their mean trip time from
    # scheduled departure to arrival (unfinished trips count until the end).
    rerouted: int = 0
    reroutes_changed: int = 0
    reroutes_en_route: int = 0  # citybrain's changes after departure (SUMO does not say)
    reroutes_waiting: int = 0  # routes changed while the car waited to enter
    reroutes_failed: int = 0  # citybrain found no route, or SUMO refused it: car kept its own
    rerouted_completed: int = 0
    trip_time_rerouted: float = float("nan")


@dataclass(frozen=True)
class HarnessOptions:
    signals: SignalsConfig = field(default_factory=SignalsConfig)
    series_bin_s: float = 300.0
    check_safety: bool = True
    tripinfo_copy: Path | None = None  # keep SUMO's tripinfo output here
    # Observations withheld in this window (s from the start): a camera outage drill.
    blackout: tuple[float, float] | None = None
    # "shipped": yellow and all-red of each net's own program, so a controller is compared
    # with the fixed program at equal clearance times; "config": the configured rules.
    clearance: str = "shipped"
    # Through the bus (digital twin): virtual RSUs publish to this Redis, a real ingest
    # worker stores their messages, and the planners read what it stored.
    bus_url: str | None = None
    miss_rate: float = 0.0  # share of road users a virtual camera misses in a frame
    noise_m: float = 0.0  # ground position noise (standard deviation)
    aggregate_s: float = 60.0  # lane_aggregates interval
    step_s: float = 1.0  # simulation step; 0.1 makes the twin's cameras send at 10 Hz
    # Route this share of the cars at departure (the same cars in every run), by
    # "citybrain" (our router on what the cameras see), "sumo" (SUMO's own routing) or
    # "none" (they keep the scenario's routes: the reference).
    reroute_share: float = 0.0
    reroute_by: str = "citybrain"
    reroute_period_s: float = 0.0  # > 0: both also reroute en route, at most this often
    # Both route a car again this often while it waits to enter a full road (0: once, at its
    # scheduled departure), as SUMO's --device.rerouting.pre-period (default 60 s) means to.
    reroute_pre_period_s: float = 60.0


def clearance_rules(rules: SafetyRules, program: ShippedProgram | None) -> SafetyRules:
    """``rules`` with the yellow and all-red intervals of the shipped program."""
    if program is None:
        return rules
    yellows = [d for s, d in program.phases if "y" in s]
    all_reds = [
        d for k, (s, d) in enumerate(program.phases)
        if set(s) <= set("rs") and "y" in program.phases[k - 1][0]
    ]  # fmt: skip
    if not yellows:
        return rules
    return replace(rules, yellow_s=max(2.0, min(yellows)),
                   all_red_s=min(all_reds) if all_reds else 0.0)  # fmt: skip


def make_planner(
    controller: str, inter: SignalIntersection, cfg: SignalsConfig, rules: SafetyRules
):
    if controller == "maxpressure":
        return MaxPressurePlanner(inter, rules, max_red_s=cfg.max_red_s)
    if controller == "citybrain":
        return AdaptivePlanner(
            inter, rules, gap_s=cfg.gap_s, wait_weight_per_s=cfg.wait_weight_per_s,
            max_red_s=cfg.max_red_s, share_memory_s=cfg.share_memory_s,
            permitted_weight=cfg.permitted_weight, overflow_share=cfg.overflow_share,
            overflow_factor=cfg.overflow_factor, patience_s=cfg.patience_s,
            blocked_within_m=cfg.blocked_within_m,
        )  # fmt: skip
    raise ValueError(f"no planner for controller {controller!r}")


@dataclass(frozen=True)
class TripMetrics:
    delay: float
    trip_time: float
    waiting_time: float
    vehicles: int
    completed: int
    delay_series: list[float]
    # the ``tracked`` vehicles scheduled to leave within the run: their mean time from
    # scheduled departure to arrival, unfinished (or never started) trips counted until
    # the end, as RESCO's delay does; how many; how many arrived
    tracked_trip_time: float = float("nan")
    tracked: int = 0
    tracked_arrived: int = 0


def _tripinfo_metrics(
    path: Path, end: float, begin: float, bin_s: float, tracked: set[str] | frozenset = frozenset()
) -> TripMetrics:
    """RESCO's metrics from SUMO's tripinfo, and the ``tracked`` vehicles' trip times, in
    one pass over the file."""
    delays, trips, waits, tracked_times = [], [], [], []
    tracked_arrived = 0
    series: dict[int, list[float]] = {}
    for _, el in ET.iterparse(path):
        if el.tag != "tripinfo":
            continue
        depart_delay = float(el.get("departDelay", 0) or 0)
        time_loss = float(el.get("timeLoss", 0) or 0)
        arrival = float(el.get("arrival", -1) or -1)
        started = el.get("depart") not in (None, "-1", "-1.00")
        duration = float(el.get("duration", 0) or 0) if started else 0.0
        if el.get("id") in tracked and depart_delay >= 0:  # < 0: scheduled after the end
            tracked_times.append(depart_delay + max(duration, 0.0))
            tracked_arrived += arrival >= 0
        if not started:
            # Never inserted: SUMO reports the time since its scheduled departure as its
            # departure delay, which is what RESCO counts.
            delays.append(depart_delay)
            el.clear()
            continue
        delay = time_loss + depart_delay
        delays.append(delay)
        waits.append(float(el.get("waitingTime", 0) or 0))
        if arrival >= 0:
            trips.append(duration)
            series.setdefault(int((arrival - begin) // bin_s), []).append(delay)
        el.clear()
    n_bins = max(1, math.ceil((end - begin) / bin_s))
    curve = [
        (sum(series[b]) / len(series[b])) if series.get(b) else float("nan") for b in range(n_bins)
    ]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return TripMetrics(
        mean(delays), mean(trips), mean(waits), len(delays), len(trips), curve,
        mean(tracked_times), len(tracked_times), tracked_arrived,
    )  # fmt: skip


def run(
    scenario: Scenario,
    controller: str,
    seed: int = 0,
    options: HarnessOptions | None = None,
    *,
    isolate: bool = True,
) -> RunResult:
    """One simulation; with ``isolate`` (the default) in a forked child process.

    libsumo keeps state from one simulation to the next inside a process (measured: the
    same scenario, controller and seed gave 94.0 or 100.4 s of delay depending on what ran
    before it), so every run gets a fresh process and the same seed always gives the same
    result.
    """
    if controller not in CONTROLLERS:
        raise ValueError(f"unknown controller {controller!r}; choose from {', '.join(CONTROLLERS)}")
    options = options or HarnessOptions()
    if not isolate:
        return _run(scenario, controller, seed, options)
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(_run, (scenario, controller, seed, options))


def _run(scenario: Scenario, controller: str, seed: int, options: HarnessOptions) -> RunResult:
    libsumo = import_libsumo()
    try:
        net = read_net(scenario.net)
    except NetError as exc:
        raise ScenarioError(str(exc)) from None
    net_inters = intersections_from_net(net)
    inters = {iid: ni.intersection for iid, ni in net_inters.items()}
    controllers: dict[str, IntersectionController] = {}
    sensing = None
    if not 0.01 <= options.step_s <= 1.0:
        raise ValueError(f"step_s must be between 0.01 and 1 s, got {options.step_s}")
    if options.clearance not in ("shipped", "config"):
        raise ValueError(f"clearance must be shipped or config, not {options.clearance!r}")
    cfg = options.signals
    base_rules = cfg.rules.rules()
    rules_of = {
        iid: clearance_rules(base_rules, ni.program) if options.clearance == "shipped"
        else base_rules
        for iid, ni in net_inters.items()
    }  # fmt: skip
    if controller != "fixed":
        for iid, inter in inters.items():
            rules = rules_of[iid]
            controllers[iid] = IntersectionController(
                inter, rules, make_planner(controller, inter, cfg, rules),
                webster_plan(inter, rules, {}),
                stale_after_s=cfg.stale_after_s, recover_after=cfg.recover_after,
            )  # fmt: skip
        if options.bus_url is None:
            box = {iid: ni.box_lanes for iid, ni in net_inters.items()}
            sensing = SumoSensing(net, inters, cfg.sensing_range_m, box)
    twin = None
    if controller != "fixed" and options.bus_url is not None:
        from citybrain.sim.twin import TwinBus

        twin = TwinBus(
            options.bus_url, net, inters,
            box_lanes={iid: ni.box_lanes for iid, ni in net_inters.items() if iid in inters},
            range_m=cfg.sensing_range_m, miss_rate=options.miss_rate,
            noise_m=options.noise_m, seed=seed,
        )  # fmt: skip
    rerouter = None
    if not 0 <= options.reroute_share <= 1:
        raise ValueError(f"reroute_share must be between 0 and 1, got {options.reroute_share}")
    if options.reroute_share > 0:
        from citybrain.routing.graph import from_sumo
        from citybrain.sim.rerouting import Rerouter

        lanes = [ln for e in net.getEdges() for ln in e.getLanes()]
        rerouter = Rerouter(
            options.reroute_by, options.reroute_share, from_sumo(net), inters,
            {ln.getID(): ln.getEdge().getID() for ln in lanes},
            {ln.getID(): ln.getLength() for ln in lanes},
            {ln.getID(): ln.getSpeed() for ln in lanes},
            period_s=options.reroute_period_s, pre_period_s=options.reroute_pre_period_s,
        )  # fmt: skip
    incoming = sorted({lane for inter in inters.values() for lane in inter.incoming_lanes})
    with tempfile.TemporaryDirectory(prefix="cb-sim-") as tmp:
        tripinfo = Path(tmp) / "tripinfo.xml"
        args = [
            "sumo", "-c", str(scenario.sumocfg),
            "-b", str(scenario.begin), "-e", str(scenario.end),
            "--seed", str(seed),
            "--time-to-teleport", "-1",
            "--no-step-log", "true", "--no-warnings", "true",
            "--step-length", f"{options.step_s:g}",
            "--tripinfo-output", str(tripinfo),
            "--tripinfo-output.write-unfinished", "true",
            "--tripinfo-output.write-undeparted", "true",
        ]  # fmt: skip
        if rerouter is not None:
            args += rerouter.sumo_args()
        t0 = time.perf_counter()
        try:
            libsumo.start(args)
        except libsumo.TraCIException as exc:
            raise ScenarioError(f"SUMO could not start {scenario.name}: {exc}") from None
        try:
            if sensing is not None:
                sensing.attach(libsumo)
            flows: dict[str, int] = {}
            flow_since = float(scenario.begin)
            queue_sum = 0.0
            steps = 0
            fallback_steps = 0
            now = float(libsumo.simulation.getTime())
            for iid, ctl in controllers.items():
                libsumo.trafficlight.setRedYellowGreenState(iid, ctl.head.state)
            while now < scenario.end:
                libsumo.simulationStep()
                for ctl in controllers.values():
                    ctl.tick(options.step_s)
                now = float(libsumo.simulation.getTime())
                queue_sum += sum(libsumo.lane.getLastStepHaltingNumber(lane) for lane in incoming)
                steps += 1
                if rerouter is not None:
                    rerouter.after_step(libsumo, now)
                if twin is not None:
                    subscribe_new(libsumo)
                    twin.publish(now, sumo_vehicles(libsumo), options.aggregate_s)
                    observations = twin.observe(now)
                elif sensing is not None:
                    observations = sensing.observe(now)
                else:
                    if rerouter is not None:
                        rerouter.before_step(libsumo, now, options.step_s)
                    continue
                dark = options.blackout is not None and (
                    options.blackout[0] <= now - scenario.begin < options.blackout[1]
                )
                for iid, ctl in controllers.items():
                    obs = observations.get(iid)
                    for lane, lo in obs.incoming.items() if obs is not None else ():
                        flows[lane] = flows.get(lane, 0) + lo.departures
                    state = ctl.step(now, None if dark else obs)
                    if ctl.mode == "fallback":
                        fallback_steps += 1
                    libsumo.trafficlight.setRedYellowGreenState(iid, state)
                if now - flow_since >= cfg.replan_s:
                    hours = (now - flow_since) / 3600.0
                    vph = {lane: n / hours for lane, n in flows.items()}
                    for iid, ctl in controllers.items():
                        ctl.set_fallback_plan(webster_plan(inters[iid], ctl.rules, vph))
                    flows, flow_since = {}, now
                if rerouter is not None:
                    rerouter.observe(now, observations)
                    rerouter.before_step(libsumo, now, options.step_s)
        finally:
            libsumo.close()
            if twin is not None:
                twin.close()
        wall = time.perf_counter() - t0
        if options.tripinfo_copy is not None:
            shutil.copyfile(tripinfo, options.tripinfo_copy)
        if options.check_safety:
            for ctl in controllers.values():
                check_schedule(ctl.intersection, ctl.rules, ctl.head.recent_schedule())
        metrics = _tripinfo_metrics(
            tripinfo, scenario.end, scenario.begin, options.series_bin_s,
            set(rerouter.original) if rerouter is not None else frozenset(),
        )  # fmt: skip
    return RunResult(
        scenario=scenario.name,
        controller=controller,
        seed=seed,
        delay=metrics.delay,
        trip_time=metrics.trip_time,
        waiting_time=metrics.waiting_time,
        queue=queue_sum / max(steps, 1) / max(len(inters), 1),
        vehicles=metrics.vehicles,
        completed=metrics.completed,
        wall_s=wall,
        fallback_steps=fallback_steps,
        clearance_holds=sum(ctl.head.clearance_holds for ctl in controllers.values()),
        bus_messages=twin.published if twin is not None else 0,
        bus_rsus=len(twin.rsus.cameras) if twin is not None else 0,
        bus_sync_waits=twin.sync_waits if twin is not None else 0,
        bus_undrained=twin.undrained if twin is not None else 0,
        clearance=options.clearance,
        delay_series=metrics.delay_series,
        rerouted=metrics.tracked,
        reroutes_changed=rerouter.changed if rerouter is not None else 0,
        reroutes_en_route=rerouter.en_route_changes if rerouter is not None else 0,
        reroutes_waiting=rerouter.waiting_changes if rerouter is not None else 0,
        reroutes_failed=rerouter.failed if rerouter is not None else 0,
        rerouted_completed=metrics.tracked_arrived,
        trip_time_rerouted=metrics.tracked_trip_time,
    )
