"""citybrain ingest under load, against the raw Redis ceiling, and the API under load.

Three parts, in one run, on one embedded Valkey server:

1. **Throughput, side by side.** The same number of real-sized frame messages (20-40 road
   users each, as an RSU sends them) are put on the bus twice.  A bare consumer-group loop
   (XREADGROUP of a batch + pipelined XACK, nothing else) drains one copy: the raw ceiling.
   One citybrain ingest worker drains the other: validate, de-duplicate, apply counts and
   state atomically, write history, ack.  The two alternate for ``--rounds`` rounds; the
   figures are medians, ``ratio_to_raw`` is ingest / raw.
2. **Latency at the offered load.** ``--rsus`` simulated RSUs publish at ``--fps`` each for
   ``--seconds`` (one publisher process, paced), while ``--workers`` ingest processes keep
   up.  Each worker records, per frame, applied-time minus the RSU's ``published_at_ms``.
   Afterwards the counts are compared with what was sent: ``lost`` and ``duplicated``.
3. **API.** ``GET /rsus/{id}/state`` with a viewer key, loaded by wrk (Debian's ``wrk``; an
   asyncio client is used when wrk is not installed) for ``--api-seconds``.

Prints a table, then one JSON line (keys from issue #5).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.bus import BusConfig, StreamProducer, discover_streams  # noqa: E402

T_PLACEHOLDER = 1_000_000_000_000  # stamped with the send time by ``stamp``
CLASSES = ["car", "car", "car", "bus", "truck", "person", "bicycle", "motorcycle"]


def frame_message(rsu_id: str, seq: int, rng: random.Random, now_ms: int) -> bytes:
    """A frame as an RSU publishes it: 20-40 tracked, calibrated road users."""
    objects = []
    for k in range(rng.randint(20, 40)):
        x, y = rng.uniform(0, 900), rng.uniform(100, 500)
        objects.append(
            {
                "track_id": seq * 64 + k,
                "category": rng.choice(CLASSES),
                "confidence": round(rng.uniform(0.3, 0.95), 3),
                "bbox": [round(x, 1), round(y, 1), round(x + 60, 1), round(y + 40, 1)],
                "ground": {"x": round(rng.uniform(-20, 20), 2), "y": round(rng.uniform(0, 60), 2)},
                "geo": {"lat": 39.9 + rng.random() / 1000, "lon": 116.4 + rng.random() / 1000},
                "speed_mps": round(rng.uniform(0, 15), 2),
                "heading_deg": round(rng.uniform(0, 359.8), 1),
                "lane_id": rng.choice(["S_in_1", "S_in_2", "S_out", None]),
            }
        )
    message = {
        "v": 1, "kind": "frame", "rsu_id": rsu_id, "camera_id": "cam0", "run_id": "bench",
        "seq": seq, "captured_at_ms": now_ms - 15, "published_at_ms": now_ms,
        "pipeline_ms": 14.2, "image_width": 960, "image_height": 540, "objects": objects,
    }  # fmt: skip
    return orjson.dumps({k: v for k, v in message.items() if v is not None})


def stamp(template: bytes, rsu_id: str, seq: int, now: int) -> bytes:
    payload = template.replace(b'"x"', f'"{rsu_id}"'.encode(), 1)
    payload = payload.replace(b'"seq":0', f'"seq":{seq}'.encode(), 1)
    payload = payload.replace(
        b'"published_at_ms":%d' % T_PLACEHOLDER, b'"published_at_ms":%d' % now
    )
    return payload.replace(
        b'"captured_at_ms":%d' % (T_PLACEHOLDER - 15), b'"captured_at_ms":%d' % (now - 15)
    )


def fill(client: redis.Redis, prefix: str, rsus: int, per_rsu: int, partitions: int) -> int:
    producer = StreamProducer(client, BusConfig(partitions=partitions, maxlen=10**7))
    rng = random.Random(1)
    pool = [frame_message("x", 0, rng, T_PLACEHOLDER) for _ in range(64)]
    sent = 0
    now = int(time.time() * 1000)
    for seq in range(per_rsu):
        batch = []
        for r in range(rsus):
            rsu_id = f"{prefix}-{r}"
            batch.append((rsu_id, stamp(pool[(seq + r) % len(pool)], rsu_id, seq, now)))
        producer.publish(batch)
        sent += len(batch)
    return sent


def raw_drain(client: redis.Redis, prefix: str, partitions: int, batch: int) -> float:
    """The ceiling: a consumer group read and acked, nothing else. Returns msgs/s."""
    streams = [s for s in discover_streams(client, partitions) if f":rsu:{prefix}-" in s]
    for stream in streams:
        client.xgroup_create(stream, "raw", id="0")
    done, start = 0, time.perf_counter()
    while True:
        reply = client.xreadgroup("raw", "c", {s: ">" for s in streams}, count=batch)
        if not reply:
            break
        pipe = client.pipeline(transaction=False)
        for stream, entries in reply:
            pipe.xack(stream, "raw", *[e[0] for e in entries])
            done += len(entries)
        pipe.execute()
    return done / (time.perf_counter() - start)


def ingest_config(url: str, partitions: int, batch: int, history: str) -> object:
    from citybrain.config import CitybrainConfig

    return CitybrainConfig.model_validate(
        {
            "bus": {"redis_url": url, "partitions": partitions},
            "ingest": {"batch": batch, "block_ms": 100},
            "history": {"url": history},
        }
    )


def ingest_drain(url: str, partitions: int, batch: int, history: str, expected: int) -> float:
    from citybrain.ingest import IngestWorker
    from common.gc_policy import favour_throughput

    worker = IngestWorker(ingest_config(url, partitions, batch, history))  # type: ignore[arg-type]
    worker.consumer.ensure_groups()
    favour_throughput()  # as IngestWorker.run() does
    start = time.perf_counter()
    while worker.stats.delivered < expected:
        if not worker.step():
            break
    return worker.stats.delivered / (time.perf_counter() - start)


def run_worker(args: argparse.Namespace) -> int:
    """--worker mode: one ingest process; writes its latency samples on SIGTERM.  With
    --drain-go FILE: waits for FILE, drains the backlog, and writes when it drained."""
    from citybrain.ingest import IngestWorker, install_signal_handlers
    from common.gc_policy import favour_throughput

    config = ingest_config(args.url, args.partitions, args.batch, args.history)
    worker = IngestWorker(config)  # type: ignore[arg-type]
    if args.drain_go:
        worker.consumer.ensure_groups()
        favour_throughput()
        go = Path(args.drain_go)
        while not go.exists():
            time.sleep(0.001)
        last_work, idle_since = time.time(), None
        while idle_since is None or time.time() - idle_since < 0.3:
            if worker.step():
                last_work, idle_since = time.time(), None
            elif idle_since is None:
                idle_since = time.time()
        Path(args.out).write_bytes(
            orjson.dumps({"delivered": worker.stats.delivered, "last_work": last_work})
        )
        return 0
    install_signal_handlers(worker)
    worker.run()
    Path(args.out).write_bytes(
        orjson.dumps({"latency": list(worker.publish_to_state_ms), "stats": worker.stats.__dict__})
    )
    return 0


def workers_drain(
    url: str, partitions: int, batch: int, history: str, workers: int, tmp: Path
) -> float:
    """``workers`` ingest processes drain the backlog together. Returns msgs/s, from the
    start signal to the last entry applied."""
    go = tmp / "go"
    go.unlink(missing_ok=True)
    procs = []
    for w in range(workers):
        out = tmp / f"drain-{w}.json"
        out.unlink(missing_ok=True)
        command = [sys.executable, __file__, "--worker", "--url", url, "--history", history,
                   "--partitions", str(partitions), "--batch", str(batch),
                   "--out", str(out), "--drain-go", str(go)]  # fmt: skip
        procs.append((subprocess.Popen(command, cwd=ROOT), out))
    time.sleep(3.0)  # all up, groups created, waiting
    start = time.time()
    go.touch()
    done = []
    for proc, out in procs:
        proc.wait(timeout=300)
        done.append(orjson.loads(out.read_bytes()))
    delivered = sum(d["delivered"] for d in done)
    return delivered / (max(d["last_work"] for d in done) - start)


def run_publisher(args: argparse.Namespace) -> int:
    """--publisher mode: ``rsus`` RSUs at ``fps`` each, paced per tick, for ``seconds``."""
    client = redis.Redis.from_url(args.url)
    producer = StreamProducer(client, BusConfig(partitions=args.partitions))
    rng = random.Random(2)
    pool = [frame_message("x", 0, rng, T_PLACEHOLDER) for _ in range(64)]
    period = 1.0 / args.fps
    start = time.perf_counter()
    seq, late_ticks = 0, 0
    while time.perf_counter() - start < args.seconds:
        tick = start + seq * period
        delay = tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late_ticks += 1
        now = int(time.time() * 1000)
        batch = []
        for r in range(args.rsus):
            rsu_id = f"live-{r}"
            batch.append((rsu_id, stamp(pool[(seq + r) % len(pool)], rsu_id, seq, now)))
        producer.publish(batch)
        seq += 1
    elapsed = time.perf_counter() - start
    Path(args.out).write_bytes(
        orjson.dumps({"sent": seq * args.rsus, "seconds": elapsed, "late_ticks": late_ticks})
    )
    return 0


def api_load(url: str, api_seconds: float, rsu_id: str) -> dict[str, float]:
    from citybrain.auth import KeyStore, Role
    from common.redis_server import free_port

    port = free_port()
    env = dict(os.environ, REDIS_URL=url)
    server = subprocess.Popen(
        [sys.executable, "-m", "citybrain.cli", "api", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _, key = KeyStore(redis.Redis.from_url(url)).create("bench", Role.viewer)
        target = f"http://127.0.0.1:{port}/rsus/{rsu_id}/state"
        import httpx

        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        probe = httpx.get(target, headers={"Authorization": f"Bearer {key}"})
        if probe.status_code != 200:
            raise RuntimeError(f"GET {target}: {probe.status_code} {probe.text[:300]}")
        if shutil.which("wrk"):
            out = subprocess.run(
                ["wrk", "-t2", "-c16", f"-d{int(api_seconds)}s", "--latency",
                 "-H", f"Authorization: Bearer {key}", target],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
            p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]  # type: ignore[union-attr]
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            return {
                "api_state_rps": round(rps, 1),
                "api_state_p99_ms": round(float(p99.group(1)) * scale, 2),  # type: ignore[union-attr]
                "api_errors": int(non2xx.group(1)) if non2xx else 0,
                "api_load_tool": "wrk -t2 -c16",
            }
        return asyncio_load(target, key, api_seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def asyncio_load(target: str, key: str, seconds: float) -> dict[str, float]:
    import asyncio

    import httpx

    async def main() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:

            async def one() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    reply = await client.get(target)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    errors += reply.status_code != 200

            await asyncio.gather(*(one() for _ in range(16)))
        return {
            "api_state_rps": round(len(latencies) / seconds, 1),
            "api_state_p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "api_errors": errors,
            "api_load_tool": "asyncio httpx, 16 connections",
        }

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rsus", type=int, default=100)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--drain-messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--api-seconds", type=float, default=10.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--history", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--drain-go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)
    if args.publisher:
        return run_publisher(args)

    from citybrain.config import CitybrainConfig
    from citybrain.state import TrafficState
    from common.redis_server import LocalRedisServer

    tmp = Path(tempfile.mkdtemp(prefix="v2x-ingest-bench-"))
    history = f"sqlite:///{tmp}/history.db"
    with LocalRedisServer() as server:
        url = server.url
        client = redis.Redis.from_url(url)
        # 1. throughput, alternating raw / ingest
        per_rsu = max(1, args.drain_messages // 50)
        raw_rates, ingest_rates, all_rates = [], [], []
        for round_no in range(args.rounds):
            client.flushall()
            sent = fill(client, f"raw{round_no}", 50, per_rsu, args.partitions)
            raw_rates.append(raw_drain(client, f"raw{round_no}", args.partitions, args.batch))
            client.flushall()
            sent = fill(client, f"ing{round_no}", 50, per_rsu, args.partitions)
            ingest_rates.append(
                ingest_drain(url, args.partitions, args.batch, history, expected=sent)
            )
            if args.workers > 1:
                client.flushall()
                fill(client, f"all{round_no}", 50, per_rsu, args.partitions)
                all_rates.append(
                    workers_drain(url, args.partitions, args.batch, history, args.workers, tmp)
                )
        raw, ingest = statistics.median(raw_rates), statistics.median(ingest_rates)
        all_workers = statistics.median(all_rates) if all_rates else ingest

        # 2. latency at the offered load
        client.flushall()
        workers = []
        for w in range(args.workers):
            out = tmp / f"worker-{w}.json"
            command = [sys.executable, __file__, "--worker", "--url", url, "--history", history]
            command += ["--partitions", str(args.partitions), "--batch", str(args.batch)]
            workers.append((subprocess.Popen([*command, "--out", str(out)], cwd=ROOT), out))
        time.sleep(2.0)  # workers up and waiting
        published = tmp / "publisher.json"
        subprocess.run(
            [sys.executable, __file__, "--publisher", "--url", url, "--rsus", str(args.rsus),
             "--fps", str(args.fps), "--seconds", str(args.seconds),
             "--partitions", str(args.partitions), "--out", str(published)],
            check=True, cwd=ROOT,
        )  # fmt: skip
        config = CitybrainConfig.model_validate(
            {"bus": {"redis_url": url, "partitions": args.partitions}}
        )
        state = TrafficState(client, config)
        deadline = time.monotonic() + 60
        while state.ingest_lag() != {"unread": 0, "pending": 0} and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc, _ in workers:
            proc.send_signal(signal.SIGTERM)
        latencies: list[int] = []
        for proc, out in workers:
            proc.wait(timeout=30)
            latencies += orjson.loads(out.read_bytes())["latency"]
        publisher = orjson.loads(published.read_bytes())
        counted = 0
        now = int(time.time() * 1000)
        for r in range(args.rsus):
            bins = state.counts(f"live-{r}", now - 3_600_000, now + 60_000, 3600, lane_id="*")
            counted += sum(b.frames for b in bins)
        sent = publisher["sent"]

        # 3. the API
        api = api_load(url, args.api_seconds, "live-0")
        client.close()
    shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "rsus": args.rsus,
        "fps_per_rsu": args.fps,
        "seconds": round(publisher["seconds"], 1),
        "offered_msgs_per_s": round(sent / publisher["seconds"], 1),
        "publisher_late_ticks": publisher["late_ticks"],
        "workers": args.workers,
        "ingest_msgs_per_s_per_worker": round(ingest, 1),
        "raw_ceiling_msgs_per_s": round(raw, 1),
        "ratio_to_raw": round(ingest / raw, 3),
        "ratio_by_round": [round(i / r, 3) for i, r in zip(ingest_rates, raw_rates, strict=True)],
        "ingest_msgs_per_s_all_workers": round(all_workers, 1),
        "ratio_to_raw_all_workers": round(all_workers / raw, 3),
        "publish_to_state_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "publish_to_state_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "sent": sent,
        "lost": max(0, sent - counted),
        "duplicated": max(0, counted - sent),
        **api,
    }
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rsu_latency import machine_info

    figures["machine"] = machine_info()
    print(f"raw ceiling       {raw:>10.0f} msg/s   (rounds {[round(r) for r in raw_rates]})")
    print(f"ingest, 1 worker  {ingest:>10.0f} msg/s   (rounds {[round(i) for i in ingest_rates]})")
    print(f"ingest, {args.workers} workers {all_workers:>9.0f} msg/s   "
          f"(rounds {[round(i) for i in all_rates]})")  # fmt: skip
    print(f"offered           {figures['offered_msgs_per_s']:>10.0f} msg/s   "
          f"publish->state p50 {figures['publish_to_state_p50_ms']} ms, "
          f"p99 {figures['publish_to_state_p99_ms']} ms")  # fmt: skip
    print(f"sent {sent}, lost {figures['lost']}, duplicated {figures['duplicated']}")
    print(f"API state: {api['api_state_rps']} req/s, p99 {api['api_state_p99_ms']} ms")
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
