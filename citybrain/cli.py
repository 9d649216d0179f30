"""``citybrain`` command line: ingest worker, API server, and the end-to-end demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from common.config import ConfigError


def _config(args: argparse.Namespace):  # -> CitybrainConfig
    from citybrain.config import load_citybrain_config

    return load_citybrain_config(args.config, args.redis_url)


def _stop_when_orphaned(stop: Callable[[], None], every_s: float = 0.5) -> None:
    """Call ``stop`` once the process that started this one is gone (even killed with
    SIGKILL, when it could not stop its children): the process is then re-parented."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _ingest(args: argparse.Namespace) -> int:
    from citybrain.ingest import IngestWorker, install_signal_handlers

    config = _config(args)
    if args.consumer:
        config = config.model_copy(
            update={"ingest": config.ingest.model_copy(update={"consumer": args.consumer})}
        )
    worker = IngestWorker(config)
    install_signal_handlers(worker)
    if args.exit_with_parent:
        _stop_when_orphaned(worker.stop)
    stats = worker.run(idle_exit_s=args.idle_exit)
    logging.getLogger("citybrain.ingest").info("stopped: %s", stats)
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from citybrain.api import create_app

    config = _config(args)
    host = args.host or config.api.host
    port = args.port if args.port is not None else config.api.port
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from citybrain.auth import KeyStore, Role
    from common.bus import connect

    store = KeyStore(connect(_config(args).bus.redis_url, _config(args).bus.cluster))
    if args.action == "create":
        try:
            role = Role.parse(args.role)
        except ValueError as exc:
            print(f"citybrain keys: error: {exc}", file=sys.stderr)
            return 2
        key, secret = store.create(args.name, role)
        print(f"created key {key.key_id} ({key.name}, {key.role.name}); store it now, it is "
              "not shown again:", file=sys.stderr)  # fmt: skip
        print(secret)
    elif args.action == "list":
        for key in store.list():
            print(f"{key.key_id}  {key.role.name:<8}  {key.name}")
    else:
        if not store.revoke(args.key_id):
            print(f"citybrain keys: error: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def _signals(args: argparse.Namespace) -> int:
    import threading

    from citybrain.signal_service import plan_once, run_planner
    from common.bus import connect

    config = _config(args)
    client = connect(config.bus.redis_url, config.bus.cluster)
    if args.once:
        for o in plan_once(client, config.signals):
            cycle = f", cycle {o.cycle_s:.0f} s" if o.cycle_s else ""
            print(f"{o.intersection}: {o.action}{cycle} ({o.reason})")
        return 0
    stop = threading.Event()
    import signal as _signal

    for sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(sig, lambda *_: stop.set())
    run_planner(client, config.signals, stop)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from citybrain.demo import DemoError, run_demo
    from common.redis_server import ServerUnavailableError

    try:
        return run_demo(
            scene=args.scene,
            port=args.port,
            exit_after=args.exit,
            realtime=args.realtime,
            max_frames=args.max_frames,
        )
    except (DemoError, ServerUnavailableError) as exc:
        print(f"citybrain demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citybrain", description="City traffic center")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="citybrain YAML config")
        p.add_argument("--redis-url", help="bus URL (default: $REDIS_URL, then the config)")

    ingest = sub.add_parser("ingest", help="run one ingest worker of the consumer group")
    common(ingest)
    ingest.add_argument("--consumer", help="consumer name (reuse it to resume pending work)")
    ingest.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    ingest.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this worker is gone (the digital twin's)",
    )
    ingest.set_defaults(func=_ingest)

    api = sub.add_parser("api", help="serve the traffic-center HTTP API")
    common(api)
    api.add_argument("--host", help="listen address (default 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (default 8080)")
    api.set_defaults(func=_api)

    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="make a key; prints it once")
    create.add_argument("--role", required=True, help="viewer, operator or admin")
    create.add_argument("--name", required=True, help="who or what the key is for")
    listing = keys_sub.add_parser("list", help="key ids, roles and names (never secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for p in (create, listing, revoke):
        common(p)
    keys.set_defaults(func=_keys)

    from citybrain.dead_letter_commands import add_parser as add_dead_letter_parser

    add_dead_letter_parser(sub, common)

    from citybrain.forecast.commands import add_parser as add_forecast_parser

    add_forecast_parser(sub)

    signals = sub.add_parser("signals", help="signal plans from forecasts")
    signals_sub = signals.add_subparsers(dest="action", required=True)
    plan = signals_sub.add_parser(
        "plan", help="size a Webster plan per intersection from its lane forecasts, propose it"
    )
    common(plan)
    plan.add_argument("--once", action="store_true", help="one pass, print what it did, exit")
    plan.set_defaults(func=_signals)

    from citybrain.sim.commands import add_parser as add_sim_parser

    add_sim_parser(sub)

    demo = sub.add_parser("demo", help="replay a clip end to end: RSU -> bus -> citybrain -> API")
    demo.add_argument("--scene", default="replay_data/intersection_beijing.yaml")
    demo.add_argument("--port", type=int, default=8080, help="API port (a free one if taken)")
    demo.add_argument("--realtime", action="store_true", help="replay at the clip's frame rate")
    demo.add_argument("--max-frames", type=int, help="replay only the first N frames")
    demo.add_argument("--exit", action="store_true", help="stop once the summary is printed")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"citybrain {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
