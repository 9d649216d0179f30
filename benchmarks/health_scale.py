"""/health with thousands of RSU streams: how long one report takes to make.

/health (and /metrics, which reuses it) reads every RSU stream's consumer group: the
ingest lag, the age of the oldest unread entry, entries trimmed unread.  This sets up
``--rsus`` streams on an embedded Valkey, each with a group that has read what was there
and ``--behind`` messages of ``--payload`` bytes it has not (a live city between two reads),
and times the report with its cache off.  ``--live``: the message each group read was sent
just before its unread one, as at 30 fps, so the search for the oldest unread entry can
stop early; without it, seconds before, so it reads every stream.

Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rsu_latency import machine_info  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rsus", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--payload", type=int, default=7000, help="bytes per message")
    parser.add_argument("--behind", type=int, default=1, help="unread messages per stream")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--live",
        action="store_true",
        help="each group has read a message sent just before its unread one (as in a city at "
        "30 fps); default: read one sent seconds before",
    )
    args = parser.parse_args()

    from citybrain.api.context import ApiContext
    from citybrain.api.service import _fresh_health_report
    from citybrain.auth import KeyStore
    from citybrain.config import CitybrainConfig
    from citybrain.intersections import IntersectionStore
    from citybrain.registry import RsuRegistry
    from citybrain.state import TrafficState
    from common.bus import BusConfig, StreamConsumer, StreamProducer
    from common.redis_server import LocalRedisServer

    rsus = [f"rsu-{i}" for i in range(args.rsus)]
    payload = b"x" * args.payload
    with LocalRedisServer() as server:
        client = redis.Redis.from_url(server.url)
        producer = StreamProducer(client, BusConfig(partitions=args.partitions))

        def publish_all() -> None:
            for i in range(0, len(rsus), 500):
                producer.publish([(rsu, payload) for rsu in rsus[i : i + 500]])

        if args.live:
            for i in range(0, len(rsus), 100):
                chunk = rsus[i : i + 100]
                read_ids = producer.publish([(rsu, payload) for rsu in chunk])
                for _ in range(args.behind):
                    producer.publish([(rsu, payload) for rsu in chunk])
                for rsu, entry_id in zip(chunk, read_ids, strict=True):
                    client.xgroup_create(
                        producer.stream_for(rsu), "citybrain", id=entry_id, entries_read=1
                    )
        else:
            publish_all()
            consumer = StreamConsumer(client, args.partitions, "citybrain", "w", batch=10_000)
            consumer.ensure_groups()
            while batch := consumer.read():
                consumer.ack(batch)
            for _ in range(args.behind):
                publish_all()
        config = CitybrainConfig.model_validate(
            {"bus": {"redis_url": server.url, "partitions": args.partitions},
             "history": {"enabled": False}}
        )  # fmt: skip
        ctx = ApiContext(
            config=config, client=client, state=TrafficState(client, config),
            keys=KeyStore(client), intersections=IntersectionStore(client),
            registry=RsuRegistry(client), history=None,
        )  # fmt: skip
        report = _fresh_health_report(ctx)  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            report = _fresh_health_report(ctx)
            times.append((time.perf_counter() - start) * 1000)
    figures = {
        "rsus": args.rsus,
        "payload_bytes": args.payload,
        "behind": args.behind,
        "live": args.live,
        "health_p50_ms": round(statistics.median(times), 1),
        "health_max_ms": round(max(times), 1),
        "ingest_unread": report.ingest_unread,
        "machine": machine_info(),
    }
    print(f"/health over {args.rsus} streams: p50 {figures['health_p50_ms']} ms, "
          f"max {figures['health_max_ms']} ms")  # fmt: skip
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
