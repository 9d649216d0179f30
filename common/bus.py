"""The message bus: one Redis stream per RSU, grouped into partitions.

Each RSU writes only its own stream, ``st:{p3}:rsu:<rsu_id>`` (so Redis ACLs can confine an
RSU's credentials to it), and announces the stream in its partition's index set,
``st:{p3}:index``.  The partition, a stable hash of the RSU id, is a Redis Cluster hash tag:
a partition's streams, index, dead letters and the center's state keys share one shard.

* :class:`StreamProducer` pipelines one XADD per message of a tick, capped with approximate
  MAXLEN.  The cap is sized in seconds of traffic: ``retention_s`` x ``max_msgs_per_s``.  It
  bounds memory while ingest is down; entries trimmed before ingest read them are counted
  (:func:`trimmed_unread`), and /health reports them, so the loss is never silent.
* :class:`StreamConsumer` reads through a consumer group in batches: first its own pending
  entries (a restarted consumer resumes what it had claimed), then new ones.  Every
  ``claim_interval_s`` it takes over entries another consumer left pending longer than
  ``claim_idle_ms`` (XAUTOCLAIM), and it picks up new RSU streams from the index sets.  Acks
  are pipelined.  A message that fails validation is moved to the partition's dead-letter
  stream with the reason, atomically with its ack.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from pydantic import Field

from common.config import StrictModel

PAYLOAD_FIELD = b"m"
DEAD_LETTER_CAP = 100_000  # per partition; older ones are trimmed, and counted
DEAD_LETTER_HEAD_BYTES = 65_536  # of an oversized message, the part kept
MIN_PER_STREAM = 1  # every stream gets a share of each read, however many there are
CLUSTER_POLL_MS = 10  # how often a Cluster consumer with nothing to do looks again
RSU_ID_PATTERN = r"[A-Za-z0-9_.\-]{1,64}"
_STREAM_RE = re.compile(r"^st:\{p(\d+)\}:rsu:(" + RSU_ID_PATTERN + r")$")


class BusConfig(StrictModel):
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis/Valkey URL; $REDIS_URL overrides it"
    )
    partitions: int = Field(8, ge=1, le=4096, description="number of partitions (hash tags)")
    retention_s: int = Field(
        600,
        ge=10,
        description="seconds of one RSU's traffic its stream keeps while ingest is behind or "
        "down; longer outages trim unread entries (counted and reported in /health)",
    )
    max_msgs_per_s: int = Field(
        40, ge=1, description="most messages per second one RSU sends (30 fps frames, plus)"
    )
    maxlen: int | None = Field(
        None, ge=100, description="entries kept per RSU stream; default retention_s x rate"
    )
    cluster: bool = Field(
        False, description="redis_url names a node of a Redis Cluster (one partition per slot)"
    )

    @property
    def stream_cap(self) -> int:
        return self.maxlen or self.retention_s * self.max_msgs_per_s


def partition_of(rsu_id: str, partitions: int) -> int:
    return zlib.crc32(rsu_id.encode()) % partitions


def partition_tag(partition: int) -> str:
    return f"{{p{partition}}}"


def stream_key(rsu_id: str, partitions: int) -> str:
    return f"st:{partition_tag(partition_of(rsu_id, partitions))}:rsu:{rsu_id}"


def index_key(partition: int) -> str:
    return f"st:{partition_tag(partition)}:index"


def dead_letter_key(partition: int) -> str:
    return f"st:{partition_tag(partition)}:dead"


def parse_stream(stream: str) -> tuple[int, str] | None:
    """(partition, rsu id) of an RSU stream key, or None for anything else."""
    match = _STREAM_RE.match(stream)
    return (int(match.group(1)), match.group(2)) if match else None


def discover_streams(client: redis.Redis, partitions: int) -> list[str]:
    """Every RSU stream announced in the index sets.  Members that are not an RSU stream of
    that very partition (a producer's mistake, or mischief) are ignored."""
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.smembers(index_key(p))
    streams = []
    for p, members in enumerate(pipe.execute()):
        for member in members:
            name = member.decode() if isinstance(member, bytes) else member
            parsed = parse_stream(name)
            if parsed and parsed[0] == p and partition_of(parsed[1], partitions) == p:
                streams.append(name)
    return sorted(streams)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{host}"


def connect(url: str, cluster: bool = False, **kwargs: object) -> redis.Redis:
    """A client with sane timeouts; decode_responses stays off (payloads are bytes).
    ``cluster``: a Redis Cluster client that finds every node from the one named."""
    options: dict[str, object] = {"socket_connect_timeout": 5.0, "socket_keepalive": True}
    options.update(kwargs)
    if cluster:
        return redis.RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, health_check_interval=30, **options)


class StreamProducer:
    def __init__(self, client: redis.Redis, config: BusConfig) -> None:
        self._client = client
        self._config = config

    def stream_for(self, rsu_id: str) -> str:
        return stream_key(rsu_id, self._config.partitions)

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Publish ``(rsu_id, payload)`` pairs in one round trip; returns the stream ids."""
        pipe = self._client.pipeline(transaction=False)
        announced: set[str] = set()
        for rsu_id, payload in messages:
            stream = self.stream_for(rsu_id)
            pipe.xadd(
                stream, {PAYLOAD_FIELD: payload}, maxlen=self._config.stream_cap, approximate=True
            )
            announced.add(rsu_id)
        for rsu_id in announced:  # cheap when already there; restores a lost index
            pipe.sadd(
                index_key(partition_of(rsu_id, self._config.partitions)), self.stream_for(rsu_id)
            )
        return pipe.execute()[: len(messages)]


@dataclass(frozen=True)
class Delivery:
    stream: str
    entry_id: bytes
    payload: bytes | None  # None when the entry has no payload field (malformed producer)


class StreamConsumer:
    def __init__(
        self,
        client: redis.Redis,
        partitions: int,
        group: str,
        consumer: str,
        *,
        batch: int = 256,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        claim_interval_s: float = 5.0,
        discover_interval_s: float = 2.0,
        loss_check_interval_s: float = 15.0,
    ) -> None:
        self._client = client
        self.partitions = partitions
        self.streams: list[str] = []
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval_s = claim_interval_s
        self.discover_interval_s = discover_interval_s
        self.loss_check_interval_s = loss_check_interval_s
        self._next_loss_check = 0.0
        self._backlog: dict[str, bytes] = {}
        self._next_claim = 0.0
        self._next_discovery = 0.0
        self._index_size = 0  # members of the index sets at the last discovery
        self.claimed_total = 0
        self._losses = LossLedger(client)

    def rewind(self) -> None:
        """Re-read our own pending entries next: after a batch failed before its ack."""
        self._backlog = {s: b"0" for s in self.streams}

    def ensure_groups(self) -> None:
        """Pick up RSU streams announced since the last look; a new stream's group starts at
        its beginning (id 0), and our own pending entries on it are re-read first."""
        self._next_discovery = time.monotonic() + self.discover_interval_s
        # Counted before they are listed: a stream announced in between is picked up now
        # and seen as new once more (harmless), never missed until the next timed look.
        pipe = self._client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.scard(index_key(p))
        self._index_size = sum(pipe.execute())
        known = set(self.streams)
        new = [s for s in discover_streams(self._client, self.partitions) if s not in known]
        pipe = self._client.pipeline(transaction=False)  # a city's RSUs at once, at start
        for stream in new:
            pipe.xgroup_create(stream, self.group, id="0", mkstream=True)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, redis.ResponseError) and "BUSYGROUP" not in str(reply):
                raise reply
        for stream in new:
            self.streams.append(stream)
            self._backlog[stream] = b"0"
        added = bool(new)
        # A gap left by an outage is counted before it closes: at start, before anything new
        # is read, then every loss_check_interval_s (two commands per stream: not every read).
        if self.streams and (added or time.monotonic() >= self._next_loss_check):
            self._next_loss_check = time.monotonic() + self.loss_check_interval_s
            self._losses.record(self.streams, self.group)

    def read(self) -> list[Delivery]:
        """Next batch: own pending first, then stale entries of others, then new entries."""
        if not self.streams or time.monotonic() >= self._next_discovery:
            self.ensure_groups()
        if not self.streams:
            time.sleep(self.block_ms / 1000)
            return []
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
        """XREADGROUP, one command per partition: a command's keys must share a Cluster slot.

        The partitions are read without blocking, in one pipelined round trip.  Only when
        all were empty does it wait for new entries: blocking on every stream at once on a
        single server, polling on a Cluster (a blocked command could watch one slot only).
        """
        by_partition: dict[int, dict[str, bytes]] = {}
        for stream, entry_id in ids.items():
            parsed = parse_stream(stream)
            by_partition.setdefault(parsed[0] if parsed else -1, {})[stream] = entry_id
        # COUNT applies to each stream: spread the batch over them, so one read stays about
        # ``batch`` entries however many RSUs there are (and none is starved).
        per_stream = max(MIN_PER_STREAM, self.batch // max(1, len(ids)))
        pipe = self._client.pipeline(transaction=False)
        for part in by_partition.values():
            pipe.xreadgroup(self.group, self.consumer, part, count=per_stream)
        if block:
            # A new RSU's stream is looked for at once when the index sets grow, not at the
            # next timed look: its first messages would wait for it (up to
            # discover_interval_s).  The counts ride in the same round trip.
            for p in range(self.partitions):
                pipe.scard(index_key(p))
        replies = pipe.execute()
        if block:
            replies, sizes = replies[: len(by_partition)], replies[len(by_partition) :]
            if sum(sizes) != self._index_size:
                self._next_discovery = 0.0
        responses = [r for reply in replies for r in (reply or [])]
        if not responses and block:
            if isinstance(self._client, redis.RedisCluster):
                time.sleep(min(self.block_ms, CLUSTER_POLL_MS) / 1000)
            else:
                responses = (
                    self._client.xreadgroup(
                        self.group, self.consumer, ids, count=self.batch, block=self.block_ms
                    )
                    or []
                )
        got: dict[str, list[Delivery]] = {}
        for stream_name, entries in responses:
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

    def dead_letter(
        self, delivery: Delivery, reason: str, dead_stream: str, keep_bytes: int = 1 << 20
    ) -> None:
        """Move one entry to ``dead_stream`` with its reason and ack it, atomically.

        The payload is kept whole up to ``keep_bytes`` (ingest passes its message size
        limit), so it can be sent again once the cause is fixed; of a larger one only the
        first ``DEAD_LETTER_HEAD_BYTES`` are kept, marked truncated.
        """
        payload = delivery.payload or b""
        fields = {
            b"source": delivery.stream.encode(),
            b"entry_id": delivery.entry_id,
            b"reason": reason.encode()[:2000],
            PAYLOAD_FIELD: payload,
            b"at_ms": str(int(time.time() * 1000)).encode(),
        }
        if len(payload) > max(keep_bytes, DEAD_LETTER_HEAD_BYTES):
            fields[PAYLOAD_FIELD] = payload[:DEAD_LETTER_HEAD_BYTES]
            fields[b"truncated"] = str(len(payload)).encode()
        if delivery.payload is None:
            fields[b"no_payload"] = b"1"
        pipe = self._client.pipeline(transaction=True)
        pipe.xadd(dead_stream, fields, maxlen=DEAD_LETTER_CAP, approximate=True)
        pipe.xack(delivery.stream, self.group, delivery.entry_id)
        pipe.execute()

    def lag(self) -> int:
        """Entries not yet delivered to the group plus entries delivered but not acked."""
        unread, pending = group_lag(self._client, self.streams, self.group)
        return unread + pending


def trimmed_unread(client: redis.Redis, streams: Sequence[str], group: str) -> dict[str, int]:
    """Per stream, entries the cap trimmed before ``group`` read them, as of now: data lost to
    an outage longer than the retention (streams without such a gap are left out)."""
    return trimmed_in(client, group_views(client, streams, group))


def trimmed_in(client: redis.Redis, views: Sequence[GroupView]) -> dict[str, int]:
    """:func:`trimmed_unread` of streams whose group views were read already.

    Mostly from the group's lag (``GroupView.trimmed``); where the server cannot compute it,
    from the stream's first entry (XINFO STREAM, which also returns the first and last
    entries' payloads: too heavy for thousands of streams every few seconds).
    """
    lost = {v.stream: v.trimmed for v in views if v.trimmed}
    unknown = [v for v in views if v.trimmed is None]
    if unknown:
        lost.update(_trimmed_unread_by_first_entry(client, unknown))
    return lost  # type: ignore[return-value]


def _trimmed_unread_by_first_entry(
    client: redis.Redis, views: Sequence[GroupView]
) -> dict[str, int]:
    """When trimming passed the group's last-delivered id (the first entry left is newer),
    every entry still in the stream is unread, so the lost ones are those added, less those
    read, less those left.  ``views``: streams whose group exists (XINFO GROUPS read)."""
    pipe = client.pipeline(transaction=False)
    for v in views:
        pipe.xinfo_stream(v.stream)
    lost: dict[str, int] = {}
    for v, info in zip(views, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(info, Exception) or v.info is None:
            continue
        first = info.get("first-entry")
        first_id = _id_tuple(first[0]) if first else None
        delivered = _id_tuple(v.delivered)
        read = v.info.get("entries-read")
        if read is None and delivered == (0, 0):
            read = 0  # made at id 0 and never read: a group made after the trimming
        # Trimming (unlike XDEL) leaves max-deleted-entry-id alone: compare the first entry.
        if first_id is None or delivered is None or first_id <= delivered or read is None:
            continue
        gap = int(info["entries-added"]) - int(read) - int(info["length"])
        if gap > 0:
            lost[v.stream] = gap
    return lost


LOSS_KEY = "cb:bus:lost"
# fields "<stream>" -> "base:current". current is the gap now open (it only grows while the
# group is behind); when the group reads past the gap, the gap closes and is added to base.
_RECORD_LOSS = """
for i = 1, #ARGV, 2 do
  local stream, now = ARGV[i], tonumber(ARGV[i + 1])
  local old = redis.call('HGET', KEYS[1], stream)
  local base, cur = 0, 0
  if old then
    local sep = string.find(old, ':')
    base, cur = tonumber(string.sub(old, 1, sep - 1)), tonumber(string.sub(old, sep + 1))
  end
  if now < cur then base = base + cur end
  if now ~= cur or not old then
    redis.call('HSET', KEYS[1], stream, base .. ':' .. now)
  end
end
return 1
"""


class LossLedger:
    """Keeps the count of trimmed-unread entries after the gap closes (once ingest reads past
    a gap, the stream no longer shows it).  Ingest records what it sees every few seconds and
    when it starts, so the total is a lower bound: entries trimmed within the last look and
    read past before the next are missed."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script = client.register_script(_RECORD_LOSS)

    def record(self, streams: Sequence[str], group: str) -> None:
        gaps = trimmed_unread(self.client, streams, group)
        stored = self.client.hgetall(LOSS_KEY)
        args: list[object] = []
        for stream in streams:
            if stream in gaps or stream.encode() in stored:
                args += [stream, gaps.get(stream, 0)]
        if args:
            self._script(keys=[LOSS_KEY], args=args)

    def total(self, views: Sequence[GroupView]) -> int:
        """Every entry known lost: closed gaps, plus open gaps as they are now (``views``:
        every stream's, as the group sees it, read already)."""
        gaps = trimmed_in(self.client, views)
        total = 0
        seen: set[str] = set()
        for name, value in self.client.hgetall(LOSS_KEY).items():
            stream = name.decode() if isinstance(name, bytes) else name
            base, current = (int(v) for v in value.decode().split(":"))
            total += base + max(current, gaps.get(stream, 0))
            seen.add(stream)
        return total + sum(n for s, n in gaps.items() if s not in seen)


def _id_tuple(value: bytes | str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class GroupView:
    """One stream as a consumer group sees it (XINFO GROUPS and XLEN): what /health needs of
    every RSU stream, read in one pass."""

    stream: str
    length: int
    info: dict | None  # the group's XINFO GROUPS entry; None: the group does not exist yet

    @property
    def pending(self) -> int:
        return int(self.info.get("pending") or 0) if self.info else 0

    @property
    def unread(self) -> int:
        """Entries not yet delivered.  A stream without the group counts as wholly unread;
        when the server cannot compute the lag (nil after entries were deleted), the bound
        XLEN - entries-read is used."""
        if self.info is None:
            return self.length
        if self.info.get("lag") is not None:
            return int(self.info["lag"])
        read = self.info.get("entries-read")
        return max(0, self.length - int(read)) if read is not None else self.length

    @property
    def trimmed(self) -> int | None:
        """Entries trimmed before the group read them, or None when the server's lag cannot
        tell.  The lag counts entries added and not read, trimmed or not: beyond what the
        stream still holds, they were trimmed unread."""
        if self.info is None:
            return 0
        lag = self.info.get("lag")
        if lag is None or self.info.get("entries-read") is None:
            # A group made (at id 0) after trimming: the server's lag counts only what is
            # left, so it cannot tell what went before.
            return None
        return max(0, int(lag) - self.length)

    @property
    def delivered(self) -> bytes | None:
        """The group's last-delivered id (None without the group)."""
        if self.info is None:
            return None
        value = self.info.get("last-delivered-id")
        return value if isinstance(value, bytes) or value is None else value.encode()


def group_views(client: redis.Redis, streams: Sequence[str], group: str) -> list[GroupView]:
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
    results = pipe.execute(raise_on_error=False)
    return [
        GroupView(stream, length if isinstance(length, int) else 0, _group_named(groups, group))
        for stream, groups, length in zip(streams, results[0::2], results[1::2], strict=True)
    ]


def _group_named(groups: list[dict] | Exception, group: str) -> dict | None:
    """``group``'s entry in an XINFO GROUPS reply (an error: the stream does not exist)."""
    if isinstance(groups, Exception):
        return None
    wanted = group.encode()
    for g in groups:
        if (g["name"] if isinstance(g["name"], bytes) else g["name"].encode()) == wanted:
            return g
    return None


def group_lag(client: redis.Redis, streams: Sequence[str], group: str) -> tuple[int, int]:
    """(unread, pending) of ``group`` over ``streams``."""
    return lag_of(group_views(client, streams, group))


def lag_of(views: Sequence[GroupView]) -> tuple[int, int]:
    """(unread, pending) over streams whose group views were read already."""
    return sum(v.unread for v in views), sum(v.pending for v in views)


def _to_delivery(stream: str, entry: tuple[bytes, dict[bytes, bytes]]) -> Delivery:
    entry_id, fields = entry
    return Delivery(stream=stream, entry_id=entry_id, payload=(fields or {}).get(PAYLOAD_FIELD))
