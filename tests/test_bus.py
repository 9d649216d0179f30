"""Stream bus semantics against a real Valkey server."""

from __future__ import annotations

import time

import redis

from common.bus import (
    BusConfig,
    StreamConsumer,
    StreamProducer,
    dead_letter_key,
    discover_streams,
    group_lag,
    index_key,
    parse_stream,
    partition_of,
    stream_key,
    trimmed_unread,
)


def producer(client: redis.Redis, partitions: int = 4) -> StreamProducer:
    return StreamProducer(client, BusConfig(partitions=partitions, maxlen=10_000))


def consumer(client: redis.Redis, name: str, partitions: int = 4, **kw: object) -> StreamConsumer:
    c = StreamConsumer(client, partitions, "g", name, batch=10, block_ms=50, **kw)
    c.ensure_groups()
    return c


def test_partition_is_stable_and_hash_tagged() -> None:
    assert partition_of("rsu-7", 8) == partition_of("rsu-7", 8)
    p = partition_of("rsu-7", 8)
    assert stream_key("rsu-7", 8) == f"st:{{p{p}}}:rsu:rsu-7"
    assert parse_stream(stream_key("rsu-7", 8)) == (p, "rsu-7")
    assert dead_letter_key(3) == "st:{p3}:dead" and index_key(3) == "st:{p3}:index"
    assert parse_stream("st:{p3}:msgs") is None and parse_stream("cb:apikeys") is None


def test_messages_published_before_the_group_exists_are_delivered(redis_client) -> None:
    producer(redis_client).publish([("rsu-a", b"1"), ("rsu-b", b"2")])
    got = consumer(redis_client, "c1").read()
    assert sorted(d.payload for d in got) == [b"1", b"2"]


def test_restarted_consumer_resumes_its_own_pending_entries(redis_client) -> None:
    producer(redis_client).publish([("rsu-a", str(i).encode()) for i in range(25)])
    first = consumer(redis_client, "c1")
    seen = [d.payload for d in first.read()]
    assert len(seen) == 10  # read but never acked: "crash"
    again = consumer(redis_client, "c1")  # same name, fresh process state
    replayed = again.read()
    assert [d.payload for d in replayed] == seen
    again.ack(replayed)
    rest = []
    while batch := again.read():
        rest += batch
        again.ack(batch)
    assert len(rest) == 15
    assert redis_client.xpending(stream_key("rsu-a", 4), "g")["pending"] == 0


def test_stale_pending_entries_are_claimed_by_another_consumer(redis_client) -> None:
    producer(redis_client).publish([("rsu-a", str(i).encode()) for i in range(5)])
    dead = consumer(redis_client, "dead")
    taken = dead.read()
    assert len(taken) == 5
    survivor = consumer(redis_client, "alive", claim_idle_ms=100, claim_interval_s=0.0)
    time.sleep(0.15)
    claimed = survivor.read()
    assert sorted(d.payload for d in claimed) == sorted(d.payload for d in taken)
    assert survivor.claimed_total == 5
    survivor.ack(claimed)
    assert survivor.lag() == 0


def test_dead_letter_keeps_payload_and_reason_and_acks(redis_client) -> None:
    producer(redis_client).publish([("rsu-a", b"garbage")])
    c = consumer(redis_client, "c1")
    (delivery,) = c.read()
    partition = partition_of("rsu-a", 4)
    c.dead_letter(delivery, "not JSON", dead_letter_key(partition))
    (entry,) = redis_client.xrange(dead_letter_key(partition))
    fields = entry[1]
    assert fields[b"reason"] == b"not JSON" and fields[b"m"] == b"garbage"
    assert fields[b"entry_id"] == delivery.entry_id
    assert redis_client.xpending(stream_key("rsu-a", 4), "g")["pending"] == 0


def test_lag_counts_unread_and_pending(redis_client) -> None:
    producer(redis_client, partitions=1).publish([("r", b"x")] * 30)
    c = consumer(redis_client, "c1", partitions=1)
    assert c.lag() == 30
    batch = c.read()
    assert c.lag() == 30  # 20 unread + 10 pending
    c.ack(batch)
    assert c.lag() == 20


def test_lag_before_the_group_exists_is_the_whole_stream(redis_client) -> None:
    producer(redis_client, partitions=2).publish([("a", b"x"), ("b", b"y"), ("c", b"z")])
    streams = discover_streams(redis_client, 2)
    assert len(streams) == 3
    assert group_lag(redis_client, streams, "nobody-yet") == (3, 0)


def test_junk_in_an_index_is_ignored_and_new_streams_are_picked_up(redis_client) -> None:
    redis_client.sadd(index_key(0), "cb:apikeys", "st:{p1}:rsu:elsewhere", "st:{p0}:rsu:bad id")
    assert discover_streams(redis_client, 2) == []
    c = consumer(redis_client, "c1", partitions=2, discover_interval_s=0.0)
    assert c.read() == []
    producer(redis_client, partitions=2).publish([("late-rsu", b"hello")])
    (delivery,) = c.read()  # discovered on the next read
    assert delivery.payload == b"hello" and parse_stream(delivery.stream)[1] == "late-rsu"


def test_entries_trimmed_before_they_were_read_are_counted(redis_client) -> None:
    small = StreamProducer(redis_client, BusConfig(partitions=1, maxlen=100))
    c = consumer(redis_client, "c1", partitions=1)
    small.publish([("r", b"x")] * 20)
    c.ensure_groups()
    c.ack(c.read())  # 10 read and acked
    stream = stream_key("r", 1)
    assert trimmed_unread(redis_client, [stream], "g") == {}
    for _ in range(10):  # ingest "down": 500 more, far past the cap of 100
        small.publish([("r", b"y")] * 50)
    redis_client.xtrim(stream, maxlen=100, approximate=False)  # approximate trims lag
    left = redis_client.xlen(stream)
    assert left == 100 and trimmed_unread(redis_client, [stream], "g") == {stream: 520 - 10 - 100}


def test_a_new_rsus_stream_is_read_at_once_not_at_the_next_timed_look(redis_client) -> None:
    """Its first messages used to wait for the next discovery, up to discover_interval_s
    (2 s): the benchmark's publish-to-state p99 at start-up was 1.8 to 2.2 s."""
    p = producer(redis_client)
    p.publish([("rsu-a", b"a1")])
    c = consumer(redis_client, "c1", discover_interval_s=3600.0)
    assert [d.payload for d in c.read()] == [b"a1"]
    p.publish([("rsu-new", b"n1")])  # a stream nobody has looked for yet
    got = []
    for _ in range(3):  # the read that sees the index grow, then the one that reads it
        got += [d.payload for d in c.read()]
    assert got == [b"n1"]


def test_entries_trimmed_before_a_group_existed_are_counted_too(redis_client) -> None:
    """The group's lag says what was trimmed only once the group has read; a group made at
    id 0 after the trimming falls back to the stream's first entry."""
    small = StreamProducer(redis_client, BusConfig(partitions=1, maxlen=100))
    for _ in range(4):
        small.publish([("late", b"z")] * 50)
    stream = stream_key("late", 1)
    redis_client.xtrim(stream, maxlen=100, approximate=False)
    redis_client.xgroup_create(stream, "g", id="0")
    assert trimmed_unread(redis_client, [stream], "g") == {stream: 200 - 100}


def test_the_oldest_unread_entry_is_found_among_many_streams(redis_client) -> None:
    """/health looks at streams from the oldest last delivery up, and stops when none left
    could be older; the one stream far behind must still be found."""
    from citybrain.config import CitybrainConfig
    from citybrain.state import TrafficState

    config = CitybrainConfig.model_validate(
        {"bus": {"redis_url": "redis://unused", "partitions": 4}, "history": {"enabled": False}}
    )
    p = producer(redis_client)
    p.publish([("stuck", b"old")])
    time.sleep(1.5)
    busy = [f"busy-{i}" for i in range(200)]
    p.publish([(rsu, b"read") for rsu in busy])
    streams = [stream_key(rsu, 4) for rsu in ["stuck", *busy]]
    for stream in streams:  # every group has read all there was
        redis_client.xgroup_create(stream, "citybrain", id="$")
    p.publish([(rsu, b"new") for rsu in ["stuck", *busy]])  # one unread entry each
    state = TrafficState(redis_client, config)
    assert state.ingest_lag()["unread"] == 201
    age = state.oldest_unread_age_ms()
    assert age is not None and age < 1000  # all new
    redis_client.xgroup_setid(streams[0], "citybrain", id="0")  # "old" is unread again
    age = state.oldest_unread_age_ms()
    assert age is not None and age >= 1500


def test_a_server_interrupted_while_starting_is_stopped_not_orphaned(monkeypatch) -> None:
    """Ctrl-C (or a signal turned into an exception) while the embedded server starts:
    the caller never gets the object back to stop it, so start() stops the process."""
    from common.redis_server import LocalRedisServer

    def interrupted(self, **_: object) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(redis.Redis, "ping", interrupted)
    server = LocalRedisServer()
    started: list = []
    real_popen = __import__("subprocess").Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr("common.redis_server.subprocess.Popen", popen)
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("start() should have been interrupted")
    assert len(started) == 1 and started[0].poll() is not None  # exited, and reaped
    assert server.process is None and not server.data_dir.exists()
