"""``citybrain sim run``: signal controllers in SUMO, scored with RESCO's metrics."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from typing import Any

import orjson

METRICS = ("delay", "trip_time", "waiting_time", "queue")


def summarise(results: list) -> dict[str, Any]:
    """Mean of each metric over the seeds of one scenario and controller."""
    first = results[0]
    out: dict[str, Any] = {"scenario": first.scenario, "controller": first.controller}
    for key in METRICS:
        values = [getattr(r, key) for r in results if math.isfinite(getattr(r, key))]
        out[key] = round(sum(values) / len(values), 3) if values else None
    out["seeds"] = len(results)
    out["clearance"] = first.clearance
    out["vehicles"] = round(sum(r.vehicles for r in results) / len(results), 1)
    out["completed"] = round(sum(r.completed for r in results) / len(results), 1)
    out["fallback_steps"] = sum(r.fallback_steps for r in results)
    out["clearance_holds"] = sum(r.clearance_holds for r in results)
    out["wall_s"] = round(sum(r.wall_s for r in results), 2)
    series = [r.delay_series for r in results]
    out["delay_series"] = [
        round(sum(vals) / len(vals), 2) if (vals := [s[i] for s in series if math.isfinite(s[i])])
        else None
        for i in range(min(len(s) for s in series))
    ]  # fmt: skip
    return out


def _run(args: argparse.Namespace) -> int:
    from citybrain.config import CitybrainConfig, load_citybrain_config
    from citybrain.sim.harness import CONTROLLERS, HarnessOptions, ScenarioError, load_scenario, run
    from citybrain.sim.sumo_env import SumoUnavailableError
    from common.config import ConfigError

    controllers = [c.strip() for c in args.controller.split(",") if c.strip()]
    unknown = [c for c in controllers if c not in CONTROLLERS]
    if unknown or not controllers:
        print(f"citybrain sim run: error: unknown controller {', '.join(unknown) or '(none)'}; "
              f"choose from {', '.join(CONTROLLERS)}", file=sys.stderr)  # fmt: skip
        return 2
    if args.seeds < 1:
        print("citybrain sim run: error: --seeds must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_citybrain_config(args.config) if args.config else CitybrainConfig()
        scenarios = [load_scenario(d, args.begin, args.end) for d in args.scenario]
    except (ConfigError, ScenarioError) as exc:
        print(f"citybrain sim run: error: {exc}", file=sys.stderr)
        return 2
    options = HarnessOptions(signals=config.signals, clearance=args.clearance)
    for scenario in scenarios:
        for controller in controllers:
            results = []
            for seed in range(args.seeds):
                try:
                    result = run(scenario, controller, seed, options)
                except (SumoUnavailableError, ScenarioError) as exc:
                    print(f"citybrain sim run: error: {exc}", file=sys.stderr)
                    return 2
                results.append(result)
                if not args.json:
                    print(f"{scenario.name} {controller} seed {seed}: delay {result.delay:.2f} s, "
                          f"trip {result.trip_time:.2f} s, waiting {result.waiting_time:.2f} s, "
                          f"queue {result.queue:.2f}, {result.completed}/{result.vehicles} trips "
                          f"done, {result.wall_s:.1f} s", file=sys.stderr)  # fmt: skip
            line = summarise(results)
            if not args.series:
                line.pop("delay_series")
            print(orjson.dumps(line).decode(), flush=True)
    return 0


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _twin(args: argparse.Namespace) -> int:
    from citybrain.sim.harness import HarnessOptions, ScenarioError, load_scenario, run
    from citybrain.sim.sumo_env import SumoUnavailableError
    from common.redis_server import LocalRedisServer, ServerUnavailableError

    # Stopped (kill, a service manager) as by Ctrl-C: the finally below then stops the
    # embedded server, which would otherwise outlive this process.
    signal.signal(signal.SIGTERM, _interrupted)
    server = None
    url = args.redis_url
    try:
        scenario = load_scenario(args.scenario, args.begin, args.end)
        if url is None:
            server = LocalRedisServer().start()
            url = server.url
        if not 1 <= args.hz <= 50:
            raise ValueError(f"--hz must be between 1 and 50, got {args.hz}")
        options = HarnessOptions(bus_url=url, miss_rate=args.miss_rate, noise_m=args.noise_m,
                                 step_s=1.0 / args.hz, reroute_share=args.reroute_share,
                                 reroute_by=args.reroute_by,
                                 reroute_period_s=args.reroute_period,
                                 reroute_pre_period_s=args.reroute_pre_period)  # fmt: skip
        result = run(scenario, "citybrain", args.seed, options)
    except (ScenarioError, SumoUnavailableError, ServerUnavailableError, ValueError) as exc:
        print(f"citybrain sim twin: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    line = summarise([result])
    line.pop("delay_series")
    line.update(
        twin_rsus=result.bus_rsus,
        twin_msgs=result.bus_messages,
        twin_msgs_per_s=round(result.bus_messages / max(result.wall_s, 1e-9), 1),
        twin_sync_waits=result.bus_sync_waits,
    )
    if args.reroute_share > 0:
        line.update(
            reroute_by=args.reroute_by,
            rerouted=result.rerouted,
            reroutes_changed=result.reroutes_changed,
            reroutes_en_route=result.reroutes_en_route,
            reroutes_waiting=result.reroutes_waiting,
            reroutes_failed=result.reroutes_failed,
            rerouted_completed=result.rerouted_completed,
            trip_time_rerouted_s=round(result.trip_time_rerouted, 2),
        )
    print(orjson.dumps(line).decode(), flush=True)
    return 0


def add_parser(sub: Any) -> None:
    sim = sub.add_parser("sim", help="traffic simulation with SUMO")
    actions = sim.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run",
        help="run signal controllers on SUMO scenarios; one JSON line per scenario/controller",
    )
    run.add_argument("--scenario", action="append", required=True,
                     help="folder with a .sumocfg, net and routes (repeatable)")  # fmt: skip
    run.add_argument("--controller", default="citybrain",
                     help="fixed | maxpressure | citybrain, or a comma-separated list")  # fmt: skip
    run.add_argument("--seeds", type=int, default=1, help="SUMO seeds 0..N-1, metrics averaged")
    run.add_argument("--begin", type=int, help="start (s); default RESCO's window or the sumocfg")
    run.add_argument("--end", type=int, help="end (s); default RESCO's window or the sumocfg")
    run.add_argument("--config", help="citybrain YAML config (its `signals` section is used)")
    run.add_argument(
        "--clearance", choices=["shipped", "config"], default="shipped",
        help="yellow and all-red: the net's own program (default, as the fixed baseline) or "
        "the config's rules",
    )  # fmt: skip
    run.add_argument("--series", action="store_true",
                     help="add delay_series: mean delay of trips ending in each 5 min")  # fmt: skip
    run.add_argument("--json", action="store_true", help="only the JSON lines, no progress")
    run.set_defaults(func=_run)
    twin = actions.add_parser(
        "twin",
        help="the digital twin: virtual RSUs publish through Redis, a real ingest worker "
        "stores it, citybrain's planners control SUMO from what was stored",
    )
    twin.add_argument("--scenario", required=True, help="folder with a .sumocfg")
    twin.add_argument("--redis-url", help="bus (default: an embedded server for the run)")
    twin.add_argument("--miss-rate", type=float, default=0.0,
                      help="share of road users a virtual camera misses per frame")  # fmt: skip
    twin.add_argument("--noise-m", type=float, default=0.0, help="ground position noise (m)")
    twin.add_argument("--hz", type=float, default=1.0,
                      help="camera frames per second (the simulation steps at 1/hz s)")  # fmt: skip
    twin.add_argument("--rsus", choices=["auto"], default="auto",
                      help="auto: one virtual RSU per approach of every signal")  # fmt: skip
    twin.add_argument(
        "--reroute-share",
        type=float,
        default=0.0,
        help="share of the cars routed at departure (the same cars every run)",
    )
    twin.add_argument(
        "--reroute-by",
        choices=["citybrain", "sumo", "none"],
        default="citybrain",
        help="who routes them: citybrain's router on what the cameras see, "
        "SUMO's own routing, or nobody (they keep the scenario's routes)",
    )
    twin.add_argument(
        "--reroute-period",
        type=float,
        default=0.0,
        help="seconds; > 0: also reroute en route, at most this often per car (0: at departure)",
    )
    twin.add_argument(
        "--reroute-pre-period",
        type=float,
        default=60.0,
        help="seconds; both routers route a car again this often while it waits to enter a "
        "full road (0: once, at its scheduled departure)",
    )
    twin.add_argument("--seed", type=int, default=0)
    twin.add_argument("--begin", type=int)
    twin.add_argument("--end", type=int)
    twin.set_defaults(func=_twin)
