"""The message bus: Redis Streams, partitioned by RSU.

RSU messages go to one of ``partitions`` streams chosen by a stable hash of the RSU id.  The
partition is a Redis Cluster hash tag (``st:{p3}:msgs``), so a partition's stream, its
dead-letter stream and the center's keys derived from it can live on one shard.

* :class:`StreamProducer` pipelines one XADD per message of a tick, trimmed with approximate
  MAXLEN (retention is sized by the producer in entries; see ``BusConfig.maxlen``).
* :class:`StreamConsumer` reads through a consumer group in batches: first its own pending
  entries (a restarted consumer resumes what it had claimed), then new ones; every
  ``claim_interval_s`` it takes over entries another consumer left pending longer than
  ``claim_idle_ms`` (XAUTOCLAIM).  Acks are pipelined; a message that fails validation is
  moved to the partition's dead-letter stream with the reason, atomically with its ack.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
from pydantic import Field

from common.config import StrictModel

PAYLOAD_FIELD = b"m"


class BusConfig(StrictModel):
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis/Valkey URL; $REDIS_URL overrides it"
    )
    partitions: int = Field(8, ge=1, le=4096, description="number of partition streams")
    maxlen: int = Field(
        200_000,
        ge=1000,
        description="approximate entries kept per partition stream (size it in seconds of traffic)",
    )


def partition_of(rsu_id: str, partitions: int) -> int:
    return zlib.crc32(rsu_id.encode()) % partitions


def partition_tag(partition: int) -> str:
    return f"{{p{partition}}}"


def stream_key(partition: int) -> str:
    return f"st:{partition_tag(partition)}:msgs"


def dead_letter_key(partition: int) -> str:
    return f"st:{partition_tag(partition)}:dead"


def all_stream_keys(partitions: int) -> list[str]:
    return [stream_key(p) for p in range(partitions)]


def connect(url: str, **kwargs: object) -> redis.Redis:
    """A client with sane timeouts; decode_responses stays off (payloads are bytes)."""
    options: dict[str, object] = {
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)


class StreamProducer:
    def __init__(self, client: redis.Redis, config: BusConfig) -> None:
        self._client = client
        self._config = config

    def stream_for(self, rsu_id: str) -> str:
        return stream_key(partition_of(rsu_id, self._config.partitions))

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Publish ``(rsu_id, payload)`` pairs in one round trip; returns the stream ids."""
        pipe = self._client.pipeline(transaction=False)
        for rsu_id, payload in messages:
            pipe.xadd(
                self.stream_for(rsu_id),
                {PAYLOAD_FIELD: payload},
                maxlen=self._config.maxlen,
                approximate=True,
            )
        return pipe.execute()


@dataclass(frozen=True)
class Delivery:
    stream: str
    entry_id: bytes
    payload: bytes | None  # None when the entry has no payload field (malformed producer)


class StreamConsumer:
    def __init__(
        self,
        client: redis.Redis,
        streams: Iterable[str],
        group: str,
        consumer: str,
        *,
        batch: int = 256,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        claim_interval_s: float = 5.0,
    ) -> None:
        self._client = client
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval_s = claim_interval_s
        # Start by re-reading our own pending entries: a restart resumes unacked work.
        self._backlog = {s: b"0" for s in self.streams}
        self._next_claim = 0.0
        self.claimed_total = 0

    def rewind(self) -> None:
        """Re-read our own pending entries next: after a batch failed before its ack."""
        self._backlog = {s: b"0" for s in self.streams}

    def ensure_groups(self) -> None:
        """Create the group on every stream; a new group starts at the beginning (id 0)."""
        for stream in self.streams:
            try:
                self._client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self) -> list[Delivery]:
        """Next batch: own pending first, then stale entries of others, then new entries."""
        if self._backlog:
            deliveries = self._read_ids(self._backlog, block=False)
            if deliveries:
                return deliveries
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.claim_interval_s
            claimed = self._autoclaim()
            if claimed:
                return claimed
        return self._read_ids({s: b">" for s in self.streams}, block=True)

    def _read_ids(self, ids: dict[str, bytes], *, block: bool) -> list[Delivery]:
        response = self._client.xreadgroup(
            self.group,
            self.consumer,
            ids,
            count=self.batch,
            block=self.block_ms if block else None,
        )
        got: dict[str, list[Delivery]] = {}
        for stream_name, entries in response or []:
            stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
            got[stream] = [_to_delivery(stream, e) for e in entries]
        if not block:
            # Re-reading our pending list: continue after the last id, drop exhausted streams.
            for stream in list(ids):
                if got.get(stream):
                    self._backlog[stream] = got[stream][-1].entry_id
                else:
                    self._backlog.pop(stream, None)
        return [d for stream_deliveries in got.values() for d in stream_deliveries]

    def _autoclaim(self) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for stream in self.streams:
            cursor = b"0-0"
            while len(deliveries) < self.batch:
                cursor, entries, *_ = self._client.xautoclaim(
                    stream,
                    self.group,
                    self.consumer,
                    min_idle_time=self.claim_idle_ms,
                    start_id=cursor,
                    count=self.batch - len(deliveries),
                )
                # Entries deleted by trimming come back as (id, None) and were removed from PEL.
                deliveries.extend(
                    _to_delivery(stream, e) for e in entries if e and e[1] is not None
                )
                if cursor in (b"0-0", "0-0"):
                    break
        self.claimed_total += len(deliveries)
        return deliveries

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        by_stream: dict[str, list[bytes]] = {}
        for d in deliveries:
            by_stream.setdefault(d.stream, []).append(d.entry_id)
        pipe = self._client.pipeline(transaction=False)
        for stream, entry_ids in by_stream.items():
            pipe.xack(stream, self.group, *entry_ids)
        pipe.execute()

    def dead_letter(self, delivery: Delivery, reason: str, dead_stream: str) -> None:
        """Move one entry to ``dead_stream`` with its reason and ack it, atomically."""
        pipe = self._client.pipeline(transaction=True)
        pipe.xadd(
            dead_stream,
            {
                b"source": delivery.stream.encode(),
                b"entry_id": delivery.entry_id,
                b"reason": reason.encode()[:2000],
                PAYLOAD_FIELD: (delivery.payload or b"")[:65536],
                b"at_ms": str(int(time.time() * 1000)).encode(),
            },
            maxlen=100_000,
            approximate=True,
        )
        pipe.xack(delivery.stream, self.group, delivery.entry_id)
        pipe.execute()

    def lag(self) -> int:
        """Entries not yet delivered to the group plus entries delivered but not acked."""
        unread, pending = group_lag(self._client, self.streams, self.group)
        return unread + pending


def group_lag(client: redis.Redis, streams: Sequence[str], group: str) -> tuple[int, int]:
    """(unread, pending) of ``group`` over ``streams``.

    A stream whose group does not exist yet counts as wholly unread.  When the server cannot
    compute the lag (it reports nil after entries were deleted), the bound XLEN - entries-read
    is used instead.
    """
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
    results = pipe.execute(raise_on_error=False)
    wanted = group.encode()
    unread = pending = 0
    for groups, length in zip(results[0::2], results[1::2], strict=True):
        length = length if isinstance(length, int) else 0
        info = None
        if not isinstance(groups, Exception):
            for g in groups:
                name = g["name"] if isinstance(g["name"], bytes) else g["name"].encode()
                if name == wanted:
                    info = g
        if info is None:
            unread += length
            continue
        pending += int(info.get("pending") or 0)
        if info.get("lag") is not None:
            unread += int(info["lag"])
        else:
            read = info.get("entries-read")
            unread += max(0, length - int(read)) if read is not None else length
    return unread, pending


def _to_delivery(stream: str, entry: tuple[bytes, dict[bytes, bytes]]) -> Delivery:
    entry_id, fields = entry
    return Delivery(stream=stream, entry_id=entry_id, payload=(fields or {}).get(PAYLOAD_FIELD))
