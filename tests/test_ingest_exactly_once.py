"""At-least-once delivery, exactly-once counting: kill -9 the ingest worker and restart it."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from citybrain import keys
from citybrain.config import CitybrainConfig
from citybrain.ingest import CRASH_AFTER_APPLY_ENV, IngestWorker
from citybrain.state import TrafficState
from common.bus import BusConfig, StreamProducer
from common.schemas import FrameObjects, PerceivedObject, RoadUserClass, encode_message

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000  # a fixed capture time (13 min into an hour), so bins are predictable
CLASSES = list(RoadUserClass)


def make_frames(rsu_id: str, n: int, seed: int) -> list[FrameObjects]:
    """Frames captured at T0 (a recording's time, for predictable bins), sent now."""
    rng = random.Random(seed)
    sent = int(time.time() * 1000)
    frames = []
    for seq in range(n):
        objects = [
            PerceivedObject(
                category=rng.choice(CLASSES),
                confidence=0.5,
                bbox=(0, 0, 10, 10),
                lane_id=rng.choice([None, "L1", "L2"]),
            )
            for _ in range(rng.randint(0, 12))
        ]
        frames.append(
            FrameObjects(
                rsu_id=rsu_id,
                camera_id="cam0",
                run_id="run1",
                seq=seq,
                captured_at_ms=T0 + seq * 100,
                published_at_ms=sent + seq // 10,
                pipeline_ms=5.0,
                image_width=100,
                image_height=100,
                objects=objects,
            )
        )
    return frames


def expected_totals(frames: list[FrameObjects]) -> dict[tuple[str, str], object]:
    out: dict[tuple[str, str], object] = {}
    for rsu_id in {f.rsu_id for f in frames}:
        mine = [f for f in frames if f.rsu_id == rsu_id]
        out[(rsu_id, "*")] = (len(mine), Counter(o.category.value for f in mine for o in f.objects))
        for lane in ("L1", "L2"):
            out[(rsu_id, lane)] = (
                0,
                Counter(o.category.value for f in mine for o in f.objects if o.lane_id == lane),
            )
    return out


def measured_totals(client: redis.Redis, config: CitybrainConfig, rsu_ids: list[str]):
    state = TrafficState(client, config)
    out: dict[tuple[str, str], object] = {}
    for rsu_id in rsu_ids:
        for lane in ("*", "L1", "L2"):
            bins = state.counts(rsu_id, T0 - 3_600_000, T0 + 7_200_000, 3600, lane_id=lane)
            obs: Counter[str] = Counter()
            for b in bins:
                obs.update(b.observations)
            out[(rsu_id, lane)] = (sum(b.frames for b in bins), obs)
    return out


def config_for(url: str, tmp_path: Path, consumer: str = "w1") -> tuple[CitybrainConfig, Path]:
    text = (
        f"bus:\n  redis_url: {url}\n  partitions: 4\n"
        f"ingest:\n  consumer: {consumer}\n  batch: 40\n  block_ms: 100\n"
        "  claim_idle_ms: 300\n  claim_interval_s: 0.2\n"
    )
    path = tmp_path / f"citybrain-{consumer}.yaml"
    path.write_text(text)
    from citybrain.config import load_citybrain_config

    return load_citybrain_config(str(path)), path


def publish(client: redis.Redis, frames: list[FrameObjects], partitions: int = 4) -> None:
    producer = StreamProducer(client, BusConfig(partitions=partitions, maxlen=100_000))
    for i in range(0, len(frames), 50):
        producer.publish([(f.rsu_id, encode_message(f)) for f in frames[i : i + 50]])


def worker_process(config_path: Path, env_extra: dict[str, str] | None = None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "citybrain.cli", "ingest", "--config", str(config_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("restart_as", ["same-consumer", "other-consumer"])
def test_worker_killed_between_apply_and_ack_counts_everything_once(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, restart_as: str
) -> None:
    frames = make_frames("rsu-a", 300, seed=1) + make_frames("rsu-b", 200, seed=2)
    publish(redis_client, frames)
    config, path = config_for(redis_url, tmp_path)

    crashed = worker_process(path, {CRASH_AFTER_APPLY_ENV: "3"})
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    state = TrafficState(redis_client, config)
    lag = state.ingest_lag()
    assert lag["pending"] > 0, "the killed worker must leave its last batch unacked"

    name = "w1" if restart_as == "same-consumer" else "w2"
    restarted_config, _ = config_for(redis_url, tmp_path, consumer=name)
    if name == "w2":
        time.sleep(0.4)  # let the dead worker's entries go idle past claim_idle_ms
    worker = IngestWorker(restarted_config, redis.Redis.from_url(redis_url))
    stats = worker.run(idle_exit_s=1.0)

    assert stats.duplicates == lag["pending"]  # the redelivered batch was recognised
    assert stats.dead_lettered == 0
    assert state.ingest_lag() == {"unread": 0, "pending": 0}
    assert measured_totals(redis_client, config, ["rsu-a", "rsu-b"]) == expected_totals(frames)


def test_random_kill9_storm_and_duplicate_publishes(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    frames = make_frames("rsu-c", 12_000, seed=3)
    config, path = config_for(redis_url, tmp_path)
    publish(redis_client, frames)
    # An RSU re-sending after a reconnect: the same messages again, under new stream ids.
    publish(redis_client, frames[100:400])
    # Garbage from a broken producer, interleaved.
    StreamProducer(redis_client, config.bus).publish([("rsu-c", b"{broken"), ("rsu-c", b"[]")])

    state = TrafficState(redis_client, config)
    rng = random.Random(7)
    unread_after_kills = []
    for _ in range(4):
        before = state.ingest_lag()["unread"]
        proc = worker_process(path)
        deadline = time.monotonic() + 30
        while state.ingest_lag()["unread"] >= before and time.monotonic() < deadline:
            time.sleep(0.005)  # kill only once the worker is busy
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        unread_after_kills.append(state.ingest_lag()["unread"])
    # Every kill landed mid-stream: progress each time, and work left at the end.
    assert all(a > b for a, b in itertools.pairwise(unread_after_kills)), unread_after_kills
    assert unread_after_kills[-1] > 0, unread_after_kills
    worker = IngestWorker(config, redis.Redis.from_url(redis_url))
    worker.run(idle_exit_s=1.0)

    assert state.ingest_lag() == {"unread": 0, "pending": 0}
    assert state.dead_letters() == 2
    assert measured_totals(redis_client, config, ["rsu-c"]) == expected_totals(frames)


def test_latest_state_is_the_newest_frame_even_when_applied_out_of_order(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    frames = make_frames("rsu-d", 30, seed=4)
    config, _ = config_for(redis_url, tmp_path)
    publish(redis_client, list(reversed(frames)))
    IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.5)
    camera = TrafficState(redis_client, config).camera_states("rsu-d")["cam0"]
    assert camera["frame"]["seq"] == 29


def test_an_rsus_cameras_are_read_without_reading_its_whole_partition(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Ingest keeps each RSU's cameras in a hash of its own, next to the partition's
    registry; an RSU known only to the registry (stored before that hash existed) is
    still found there."""
    config, _ = config_for(redis_url, tmp_path)
    frames = make_frames("rsu-k", 3, seed=5)
    frames += [f.model_copy(update={"camera_id": "cam1"}) for f in make_frames("rsu-k", 2, 6)]
    publish(redis_client, [*frames, *make_frames("rsu-l", 2, seed=7)])
    IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.5)
    state = TrafficState(redis_client, config)
    tag = keys.rsu_tag("rsu-k", config.bus.partitions)
    own = redis_client.hgetall(keys.rsu_cameras_key(tag, "rsu-k"))
    assert sorted(own) == [b"cam0", b"cam1"]
    cameras = state.cameras("rsu-k")
    assert sorted(cameras) == ["cam0", "cam1"] and all(ms > 0 for ms in cameras.values())
    assert sorted(state.registry()) == ["rsu-k", "rsu-l"]
    redis_client.delete(keys.rsu_cameras_key(tag, "rsu-k"))  # as an older version left it
    assert sorted(state.cameras("rsu-k")) == ["cam0", "cam1"]
    assert state.cameras("rsu-nobody") == {}


def test_lane_aggregates_and_health_reach_counts_and_state(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from common.schemas import LaneAggregates, LaneInterval, RsuHealth

    lanes = [
        LaneAggregates(
            rsu_id="rsu-e",
            camera_id="cam0",
            run_id="run1",
            seq=i,
            interval_start_ms=T0 + i * 60_000,
            interval_s=60,
            observed_s=60,
            lanes=[
                LaneInterval(lane_id="L1", counts={RoadUserClass.car: 10 + i}, queue_vehicles=i),
                LaneInterval(lane_id="L2", counts={RoadUserClass.bus: 1}),
            ],
        )
        for i in range(3)
    ]
    health = RsuHealth(
        rsu_id="rsu-e", camera_id="cam0", run_id="run1", seq=0, sent_at_ms=T0, status="degraded",
        source_connected=False, fps=0.0, frames_processed=5, frames_skipped=2, budget_ms=20,
        budget_violations=1, detail="camera stream lost",
    )  # fmt: skip
    producer = StreamProducer(redis_client, BusConfig(partitions=4))
    payloads = [("rsu-e", encode_message(m)) for m in [*lanes, lanes[0], health]]
    producer.publish(payloads)  # lanes[0] twice: counted once
    config, _ = config_for(redis_url, tmp_path)
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.5)
    assert (stats.applied, stats.duplicates) == (4, 1)

    state = TrafficState(redis_client, config)
    bins = state.counts("rsu-e", T0, T0 + 3_600_000, 3600, lane_id="L1")
    assert [b.counts for b in bins] == [{"car": 10 + 11 + 12}]
    totals = state.counts("rsu-e", T0, T0 + 3_600_000, 60, lane_id="*")
    assert [b.counts for b in totals] == [{"car": 10 + i, "bus": 1} for i in range(3)]
    camera = state.camera_states("rsu-e")["cam0"]
    assert camera["lanes"]["seq"] == 2
    assert camera["health"]["detail"] == "camera stream lost"


def test_bad_entries_are_dead_lettered_with_their_reason_not_lost(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from common.bus import index_key, partition_of

    config, _ = config_for(redis_url, tmp_path)
    producer = StreamProducer(redis_client, config.bus)
    stream = producer.stream_for("rsu-f")
    redis_client.sadd(index_key(partition_of("rsu-f", config.bus.partitions)), stream)
    redis_client.xadd(stream, {b"data": b"from a foreign producer"})
    # rsu-f speaking for rsu-a on its own stream: an RSU may only speak for itself.
    forged = make_frames("rsu-a", 1, seed=9)[0]
    producer.publish([("rsu-f", encode_message(forged))])
    huge = b'{"kind": "frame", "pad": "' + b"x" * (config.ingest.max_message_bytes + 1) + b'"}'
    producer.publish([("rsu-f", huge)])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert stats.dead_lettered == 3 and stats.applied == 0
    dead = [e[1] for e in redis_client.xrange(stream.split(":rsu:")[0] + ":dead")]
    reasons = [d[b"reason"].decode() for d in dead]
    assert reasons[0] == "entry has no 'm' payload field"
    assert reasons[1] == "message from rsu_id 'rsu-a' on the stream of 'rsu-f'"
    assert reasons[2].startswith(f"message of {len(huge)} bytes exceeds")
    assert TrafficState(redis_client, config).ingest_lag() == {"unread": 0, "pending": 0}
    assert TrafficState(redis_client, config).cameras("rsu-a") == {}


def test_a_batch_partly_applied_before_counts_only_its_new_messages(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from citybrain.apply import StateWriter
    from citybrain.keys import rsu_tag
    from common.frame_codec import decode_for_ingest
    from common.schemas import encode_message

    config, _ = config_for(redis_url, tmp_path)
    writer = StateWriter(redis_client, config.state)
    frames = make_frames("rsu-f", 16, seed=5)
    tag = rsu_tag("rsu-f", config.bus.partitions)

    def batch(selected: list[FrameObjects]) -> list[tuple[object, bytes]]:
        return [(decode_for_ingest(p), p) for p in (encode_message(f) for f in selected)]

    first = writer.apply(tag, batch(frames[:10]))  # type: ignore[arg-type]
    assert (first.applied, first.duplicates) == (10, 0)
    # 5..9 again, 10..15 new, and 12 twice within the batch (a re-sent spool)
    second = writer.apply(tag, batch([*frames[5:16], frames[12]]))  # type: ignore[arg-type]
    assert (second.applied, second.duplicates) == (6, 6)
    again = writer.apply(tag, batch(frames))  # type: ignore[arg-type]
    assert (again.applied, again.duplicates) == (0, 16)

    state = TrafficState(redis_client, config)
    obs: Counter[str] = Counter()
    bins = state.counts("rsu-f", T0 - 3_600_000, T0 + 7_200_000, 3600, lane_id="*")
    for b in bins:
        obs.update(b.observations)
    assert sum(b.frames for b in bins) == 16
    assert obs == Counter(o.category.value for f in frames for o in f.objects)
    assert state.camera_states("rsu-f")["cam0"]["frame"]["seq"] == 15


def test_integers_beyond_64_bits_are_dead_lettered_naming_the_field(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """JSON allows any integer; Redis, SQLite and PostgreSQL keep 64 bits. A count of 2**64
    once made the worker fail on every delivery of its batch, for ever."""
    from common.schemas import LaneAggregates, LaneInterval

    config, _ = config_for(redis_url, tmp_path)
    good = make_frames("rsu-g", 2, seed=3)
    wide_seq = encode_message(good[1]).replace(b'"seq":1,', f'"seq":{2**70},'.encode())
    lanes = LaneAggregates(
        rsu_id="rsu-g", camera_id="cam0", run_id="run1", seq=0, interval_start_ms=T0,
        interval_s=60, observed_s=60,
        lanes=[LaneInterval(lane_id="L1", counts={RoadUserClass.car: 7})],
    )  # fmt: skip
    wide_count = encode_message(lanes).replace(b'"car":7', f'"car":{2**64}'.encode())
    negative = encode_message(lanes).replace(b'"car":7', b'"car":-7')
    assert wide_seq != encode_message(good[1]) and wide_count != negative
    producer = StreamProducer(redis_client, config.bus)
    sent = [encode_message(good[0]), wide_seq, wide_count, negative, encode_message(lanes)]
    producer.publish([("rsu-g", payload) for payload in sent])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered) == (2, 3)
    dead = redis_client.xrange(producer.stream_for("rsu-g").split(":rsu:")[0] + ":dead")
    reasons = [entry[1][b"reason"].decode() for entry in dead]
    assert reasons[0].startswith("invalid frame: frame.seq: ")
    assert reasons[1].startswith("invalid lane_aggregates: lane_aggregates.lanes.0.counts.car: ")
    assert reasons[2].endswith("lanes.0.counts.car: Input should be greater than or equal to 0")
    bins = TrafficState(redis_client, config).counts("rsu-g", T0, T0 + 60_000, 60, lane_id="L1")
    assert [b.counts for b in bins] == [{"car": 7}]


def test_non_finite_numbers_are_dead_lettered_not_stored(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """JSON has no infinity, but `1e999` and `Infinity` parse as one. Such a message was
    applied (and the RSU's good copy then dropped as its duplicate), and every later read of
    the RSU's state failed on it."""
    from common.schemas import LaneAggregates, LaneInterval

    config, _ = config_for(redis_url, tmp_path)
    lanes = LaneAggregates(
        rsu_id="rsu-h", camera_id="cam0", run_id="run1", seq=0, interval_start_ms=T0,
        interval_s=60, observed_s=60,
        lanes=[LaneInterval(lane_id="L1", counts={RoadUserClass.car: 7}, mean_speed_mps=5.5)],
    )  # fmt: skip
    good = encode_message(lanes)
    sent = [
        good.replace(b'"mean_speed_mps":5.5', b'"mean_speed_mps":1e999'),
        good.replace(b'"interval_s":60.0', b'"interval_s":Infinity'),
        good,
    ]
    assert len(set(sent)) == 3
    producer = StreamProducer(redis_client, config.bus)
    producer.publish([("rsu-h", payload) for payload in sent])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered, stats.duplicates) == (1, 2, 0)
    dead = redis_client.xrange(producer.stream_for("rsu-h").split(":rsu:")[0] + ":dead")
    reasons = [entry[1][b"reason"].decode() for entry in dead]
    assert reasons[0].startswith("not JSON: number is infinity")
    assert reasons[1].startswith("not JSON: unexpected character")
    state = TrafficState(redis_client, config)
    lane = state.camera_states("rsu-h")["cam0"]["lanes"]["lanes"][0]
    assert lane["mean_speed_mps"] == 5.5
    bins = state.counts("rsu-h", T0, T0 + 60_000, 60, lane_id="L1")
    assert [b.counts for b in bins] == [{"car": 7}]


def test_a_lane_id_with_the_field_separator_is_dead_lettered(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Counters are named "bin|camera|lane|metric|class": a lane id holding "|" made every
    later count query of its RSU fail."""
    from common.schemas import LaneAggregates, LaneInterval

    config, _ = config_for(redis_url, tmp_path)

    def lanes(seq: int, lane_id: str) -> LaneAggregates:
        return LaneAggregates(
            rsu_id="rsu-i", camera_id="cam0", run_id="run1", seq=seq, interval_start_ms=T0,
            interval_s=60, observed_s=60,
            lanes=[LaneInterval(lane_id=lane_id, counts={RoadUserClass.car: 3})],
        )  # fmt: skip

    producer = StreamProducer(redis_client, config.bus)
    good = encode_message(lanes(1, "L1"))
    piped = encode_message(lanes(0, "L1")).replace(b'"lane_id":"L1"', b'"lane_id":"a|b"')
    # A frame, the fast decoder's way, with the "|" written as a JSON escape.
    frame = make_frames("rsu-i", 1, seed=1)[0].model_copy(
        update={"objects": [PerceivedObject(category=RoadUserClass.car, confidence=0.5,
                                            bbox=(0, 0, 10, 10), lane_id="aXb")]}
    )  # fmt: skip
    escaped = encode_message(frame).replace(b"aXb", b"a\\u007cb")
    assert b"\\u007c" in escaped
    producer.publish([("rsu-i", piped), ("rsu-i", escaped), ("rsu-i", good)])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered) == (1, 2)
    dead = redis_client.xrange(producer.stream_for("rsu-i").split(":rsu:")[0] + ":dead")
    reasons = [entry[1][b"reason"].decode() for entry in dead]
    assert "lanes.0.lane_id: String should match pattern" in reasons[0]
    assert "objects.0.lane_id: String should match pattern" in reasons[1]
    bins = TrafficState(redis_client, config).counts("rsu-i", T0, T0 + 60_000, 60)
    assert {(b.lane_id, tuple(b.counts.items())) for b in bins} >= {("L1", (("car", 3),))}


def test_a_lane_called_star_is_dead_lettered(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """'*' is the row of a camera's total: a lane of that name would count there twice."""
    from common.schemas import LaneAggregates, LaneInterval

    config, _ = config_for(redis_url, tmp_path)
    frames = make_frames("rsu-j", 3, seed=5)
    star = frames[1].model_copy(
        update={"objects": [PerceivedObject(category=RoadUserClass.car, confidence=0.5,
                                            bbox=(0, 0, 10, 10), lane_id="*")]}
    )  # fmt: skip
    lanes = LaneAggregates(
        rsu_id="rsu-j", camera_id="cam0", run_id="run1", seq=0, interval_start_ms=T0,
        interval_s=60, observed_s=60,
        lanes=[LaneInterval(lane_id="*", counts={RoadUserClass.car: 3})],
    )  # fmt: skip
    sent = [encode_message(m) for m in (frames[0], star, lanes, frames[2])]
    sent.append(sent[1].replace(b'"lane_id":"*"', b'"lane_id":"\\u002a"'))  # escaped
    assert b"\\u002a" in sent[4]
    producer = StreamProducer(redis_client, config.bus)
    producer.publish([("rsu-j", payload) for payload in sent])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered) == (2, 3)
    dead = redis_client.xrange(producer.stream_for("rsu-j").split(":rsu:")[0] + ":dead")
    reasons = {entry[1][b"reason"].decode() for entry in dead}
    assert reasons == {"lane id '*' is reserved for the camera's total"}
    assert measured_totals(redis_client, config, ["rsu-j"])[("rsu-j", "*")][0] == 2  # frames


def test_a_lane_named_like_a_counting_lines_row_is_dead_lettered(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Counting line x's counts are kept in the row "line:x": a lane of that name would
    show its counts in that row, mixed with the line's."""
    from common.schemas import LaneAggregates, LaneInterval, LineInterval

    config, _ = config_for(redis_url, tmp_path)
    line = LaneAggregates(
        rsu_id="rsu-m", camera_id="cam0", run_id="run1", seq=0, interval_start_ms=T0,
        interval_s=60, observed_s=60, lanes=[LaneInterval(lane_id="L1", counts={})],
        lines=[LineInterval(line_id="x", positive={RoadUserClass.car: 4})],
    )  # fmt: skip
    posing = line.model_copy(
        update={"seq": 1, "lines": [], "lanes": [LaneInterval(lane_id="line:x", counts={})]}
    )
    escaped = encode_message(posing.model_copy(update={"seq": 2})).replace(
        b'"line:x"', b'"line\\u003ax"'
    )
    assert b"line\\u003ax" in escaped
    producer = StreamProducer(redis_client, config.bus)
    producer.publish([("rsu-m", encode_message(m)) for m in (line, posing)] + [("rsu-m", escaped)])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered) == (1, 2)
    dead = redis_client.xrange(producer.stream_for("rsu-m").split(":rsu:")[0] + ":dead")
    assert {entry[1][b"reason"].decode() for entry in dead} == {
        "lane id 'line:x': the prefix 'line:' is reserved for counting lines"
    }


def test_lane_aggregates_naming_a_lane_twice_are_dead_lettered(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The live counters used to add both intervals of the lane, and the history to keep
    one of them: 7 cars live, 3 in the history."""
    from common.schemas import LaneAggregates, LaneInterval

    config, _ = config_for(redis_url, tmp_path)
    lanes = LaneAggregates(
        rsu_id="rsu-k", camera_id="cam0", run_id="run1", seq=0, interval_start_ms=T0,
        interval_s=60, observed_s=60,
        lanes=[LaneInterval(lane_id="L1", counts={RoadUserClass.car: 3}),
               LaneInterval(lane_id="L2", counts={RoadUserClass.car: 4})],
    )  # fmt: skip
    twice = encode_message(lanes).replace(b'"lane_id":"L2"', b'"lane_id":"L1"')
    producer = StreamProducer(redis_client, config.bus)
    producer.publish([("rsu-k", twice)])
    stats = IngestWorker(config, redis.Redis.from_url(redis_url)).run(idle_exit_s=0.3)
    assert (stats.applied, stats.dead_lettered) == (0, 1)
    (dead,) = redis_client.xrange(producer.stream_for("rsu-k").split(":rsu:")[0] + ":dead")
    assert dead[1][b"reason"].decode().endswith("lanes: 'L1' more than once")
    assert TrafficState(redis_client, config).counts("rsu-k", T0, T0 + 60_000, 60) == []
