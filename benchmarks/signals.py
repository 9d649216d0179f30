"""Signal controllers on every RESCO scenario: fixed, max-pressure and citybrain, side by side.

For each scenario folder under ``sumo/resco`` in the data directory, every controller runs
the RESCO evaluation window for ``--seeds`` SUMO seeds in this one run (two worker
processes, one per core), through the same harness as ``citybrain sim run``: planners see
only camera-range observations, yellow and all-red are the net's own (as the fixed program
has them).  The table puts RESCO's published delays (Ault & Sharon, NeurIPS 2021, as quoted
in the data directory's README) beside ours; ``--markdown FILE`` writes the table and a
delay-over-time chart per scenario (Mermaid) for BENCHMARKS.md.

Targets (issue #7): citybrain's delay <= 0.7 x fixed on every scenario with a fixed
program, below our max-pressure everywhere, and at or below the best published learning
controller (IDQN, IPPO, MPLight, FMA2C) on at least 4 of the 6 scenarios.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONTROLLERS = ("fixed", "maxpressure", "citybrain")
LEARNERS = ("IDQN", "IPPO", "MPLight", "FMA2C")
# RESCO's published average delay (s); baselines are means over episodes, learners their
# best episode.  None: the benchmark has no fixed-time figure for that scenario.
PUBLISHED = {
    "cologne1": {"Fixed": 56.61, "Max-pressure": 65.85, "IDQN": 26.05, "IPPO": 43.24,
                 "MPLight": 28.74, "FMA2C": 30.79},
    "cologne3": {"Fixed": 46.35, "Max-pressure": 162.28, "IDQN": 23.99, "IPPO": 24.03,
                 "MPLight": 83.65, "FMA2C": 26.86},
    "ingolstadt1": {"Fixed": 39.40, "Max-pressure": 23.62, "IDQN": 21.48, "IPPO": 20.90,
                    "MPLight": 28.31, "FMA2C": 27.00},
    "ingolstadt7": {"Fixed": 91.31, "Max-pressure": 46.82, "IDQN": 31.19, "IPPO": 31.68,
                    "MPLight": 48.21, "FMA2C": 51.39},
    "grid4x4": {"Fixed": None, "Max-pressure": 52.55, "IDQN": 32.95, "IPPO": 44.00,
                "MPLight": 46.91, "FMA2C": 99.77},
    "arterial4x4": {"Fixed": None, "Max-pressure": 952.75, "IDQN": 1168.32, "IPPO": 686.62,
                    "MPLight": 837.75, "FMA2C": 654.13},
}  # fmt: skip


def machine_info() -> dict[str, object]:
    from importlib.metadata import PackageNotFoundError, version

    from rsu_latency import machine_info as base_info

    info = base_info()
    try:
        info["sumo"] = version("eclipse-sumo")
    except PackageNotFoundError:
        info["sumo"] = "unknown"
    return info


def _one(job: tuple[str, str, int]):  # -> RunResult
    from citybrain.sim.harness import load_scenario, run

    directory, controller, seed = job
    return run(load_scenario(directory), controller, seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", help="comma-separated names (default: all)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--markdown", help="write the tables and charts here")
    args = parser.parse_args()

    from citybrain.sim.commands import summarise
    from common.datadir import resolve_asset

    resco = resolve_asset("sumo/resco")
    names = args.scenarios.split(",") if args.scenarios else [
        n for n in PUBLISHED if (resco / n).is_dir()
    ]  # fmt: skip
    jobs = [(str(resco / n), c, s) for n in names for c in CONTROLLERS for s in range(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_one, jobs))
    wall = time.perf_counter() - t0

    table: dict[str, dict] = {}
    for name in names:
        table[name] = {}
        for c in CONTROLLERS:
            rows = [r for r in results if r.scenario == name and r.controller == c]
            table[name][c] = summarise(rows)

    lines = [
        f"SUMO {machine_info()['sumo']}, {args.seeds} seeds, RESCO windows, time to teleport "
        "off; delay = mean of time loss + departure delay over all vehicles (RESCO).",
        "",
        "| scenario | fixed (ours) | max-pressure (ours) | **citybrain** | citybrain / fixed "
        "| published Fixed | published MP | IDQN | IPPO | MPLight | FMA2C | citybrain <= best "
        "learner |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    figures: dict[str, dict] = {}
    at_or_below_best = 0
    ratio_ok = True
    below_mp = True
    for name in names:
        pub = PUBLISHED.get(name, {})
        fixed, mp, cb = (table[name][c]["delay"] for c in CONTROLLERS)
        best = min((pub[k] for k in LEARNERS if pub.get(k) is not None), default=None)
        has_fixed = pub.get("Fixed") is not None
        ratio = cb / fixed if fixed else None
        beats_best = best is not None and cb <= best
        at_or_below_best += beats_best
        if has_fixed and (ratio is None or ratio > 0.7):
            ratio_ok = False
        if cb >= mp:
            below_mp = False
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(
            f"| {name} | {fmt(fixed)} | {fmt(mp)} | **{fmt(cb)}** | {fmt(ratio)}"
            f"{'' if has_fixed else ' (no fixed program)'} | {fmt(pub.get('Fixed'))} | "
            f"{fmt(pub.get('Max-pressure'))} | "
            + " | ".join(fmt(pub.get(k)) for k in LEARNERS)
            + f" | {'yes' if beats_best else 'no'} (best {fmt(best)}) |"
        )
        figures[name] = {
            c: {k: table[name][c][k] for k in ("delay", "trip_time", "waiting_time", "queue")}
            for c in CONTROLLERS
        }
        figures[name]["citybrain_over_fixed"] = round(ratio, 3) if ratio else None
        figures[name]["best_published_learner"] = best
    lines += ["", "Trip time, waiting time and queue (mean halting vehicles per intersection):", "",
              "| scenario | controller | delay | trip time | waiting time | queue | trips done "
              "| fallback steps | clearance holds |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in names:
        for c in CONTROLLERS:
            t = table[name][c]
            lines.append(f"| {name} | {c} | {t['delay']:.2f} | {t['trip_time']:.2f} | "
                         f"{t['waiting_time']:.2f} | {t['queue']:.2f} | "
                         f"{t['completed']:.0f}/{t['vehicles']:.0f} | "
                         f"{t['fallback_steps']} | {t['clearance_holds']} |")  # fmt: skip
    charts = []
    for name in names:
        series = {c: table[name][c]["delay_series"] for c in CONTROLLERS}
        n = min(len(s) for s in series.values())
        top = max((v for s in series.values() for v in s[:n] if v is not None), default=1)
        charts += [
            f"**{name}**: mean delay (s) of the trips ending in each 5 minutes "
            "(fixed, max-pressure, citybrain)",
            "", "```mermaid", "xychart-beta",
            f'    x-axis "minutes" [{", ".join(str(5 * (i + 1)) for i in range(n))}]',
            f'    y-axis "delay (s)" 0 --> {int(top * 1.1) + 1}',
        ]  # fmt: skip
        for c in CONTROLLERS:
            vals = ", ".join(f"{v:.1f}" if v is not None else "0" for v in series[c][:n])
            charts.append(f"    line [{vals}]")
        charts += ["```", ""]
    text = "\n".join(lines)
    print(text, file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n\n" + "\n".join(charts) + "\n")
    out = {
        "benchmark": "signals",
        "seeds": args.seeds,
        "scenarios": figures,
        "citybrain_le_0_7_fixed_everywhere": ratio_ok,
        "citybrain_below_maxpressure_everywhere": below_mp,
        "scenarios_at_or_below_best_learner": at_or_below_best,
        "wall_s": round(wall, 1),
        "machine": machine_info(),
    }
    print(orjson.dumps(out).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
