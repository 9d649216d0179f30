"""``citybrain`` command line: ingest worker, API server, and the end-to-end demo."""

from __future__ import annotations

import argparse
import logging
import sys

from common.config import ConfigError


def _config(args: argparse.Namespace):  # -> CitybrainConfig
    from citybrain.config import load_citybrain_config

    return load_citybrain_config(args.config, args.redis_url)


def _ingest(args: argparse.Namespace) -> int:
    from citybrain.ingest import IngestWorker, install_signal_handlers

    config = _config(args)
    if args.consumer:
        config = config.model_copy(
            update={"ingest": config.ingest.model_copy(update={"consumer": args.consumer})}
        )
    worker = IngestWorker(config)
    install_signal_handlers(worker)
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
    ingest.set_defaults(func=_ingest)

    api = sub.add_parser("api", help="serve the traffic-center HTTP API")
    common(api)
    api.add_argument("--host", help="listen address (default 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (default 8080)")
    api.set_defaults(func=_api)

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
