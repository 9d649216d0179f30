"""Applying a batch of validated messages to the traffic state, exactly once.

One Lua script call per partition batch, atomic.  It first looks up every message's identity
in the de-dup bitmaps; if any was applied before (a redelivery), it changes nothing and names
them, and the caller applies the rest again without them.  Otherwise it marks every message
and writes the batch: its binned counts summed over the batch (one ``HINCRBY`` per counter,
not per message and counter), the newest frame/lane/health state per camera, and the
registry's last-seen times (per partition, and per RSU for reading one RSU's cameras).
Because the marks and the counts change together, a worker killed between applying a batch
and acking it can have the batch redelivered without anything being counted twice.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from operator import attrgetter

import orjson
import redis

from citybrain import keys
from citybrain.config import StateConfig
from common.frame_codec import BusMessage, FrameView
from common.schemas import FrameObjects, LaneAggregates

APPLY_SCRIPT = """
local counts_ttl = ARGV[1]
local seen_ttl = ARGV[2]
local now_ms = ARGV[3]
local plan = cjson.decode(ARGV[4])
local replace_after_ms = tonumber(ARGV[5])
-- plan.seen: {{key, {bit, ...}, {message index, ...}}, ...}, one entry per de-dup bitmap;
-- BITFIELD reads and writes many bits in one command (in chunks: Lua's unpack is bounded).
local CHUNK = 500
local function bitfield(key, op, bits, first, last)
  local args = {}
  for i = first, last do
    args[#args + 1] = op
    args[#args + 1] = 'u1'
    args[#args + 1] = bits[i]
    if op == 'SET' then args[#args + 1] = 1 end
  end
  return redis.call('BITFIELD', key, unpack(args))
end
local duplicates = {}
for _, s in ipairs(plan.seen) do
  local bits, messages = s[2], s[3]
  for first = 1, #bits, CHUNK do
    local last = math.min(first + CHUNK - 1, #bits)
    local old = bitfield(KEYS[s[1]], 'GET', bits, first, last)
    for i = 1, #old do
      if old[i] == 1 then duplicates[#duplicates + 1] = messages[first + i - 1] end
    end
  end
end
if #duplicates > 0 then
  return {0, duplicates}
end
for _, s in ipairs(plan.seen) do
  local key, bits = KEYS[s[1]], s[2]
  for first = 1, #bits, CHUNK do
    bitfield(key, 'SET', bits, first, math.min(first + CHUNK - 1, #bits))
  end
  redis.call('EXPIRE', key, seen_ttl)
end
-- plan.counts: {{key, field, n, field, n, ...}, ...}
for _, incr in ipairs(plan.counts) do
  local counts = KEYS[incr[1]]
  for i = 2, #incr, 2 do
    redis.call('HINCRBY', counts, incr[i], incr[i + 1])
  end
  redis.call('EXPIRE', counts, counts_ttl)
end
-- plan.states: {{key, slot, ts, body ARGV index}, ...}, the newest per camera and slot.
-- The newest stays the state; one kept longer than replace_after_ms gives way to any newer
-- arrival, so a camera whose clock ran ahead and was set back is not pinned to the past.
for _, s in ipairs(plan.states) do
  local state, slot, ts = KEYS[s[1]], s[2], s[3]
  local current = redis.call('HMGET', state, slot .. '_ts', slot .. '_ingested_ms')
  if (not current[1]) or tonumber(current[1]) < tonumber(ts)
      or tonumber(now_ms) - tonumber(current[2] or 0) > replace_after_ms then
    redis.call('HSET', state, slot .. '_ts', ts, slot, ARGV[s[4]], slot .. '_ingested_ms', now_ms)
  end
end
-- plan.registry: {{key, field, RSU's cameras key, camera}, ...}
for _, r in ipairs(plan.registry) do
  redis.call('HSET', KEYS[r[1]], r[2], now_ms)
  redis.call('HSET', KEYS[r[3]], r[4], now_ms)
end
-- plan.clock: {{key, field, ms}, ...}, how far each camera's clock runs ahead of the server's
for _, c in ipairs(plan.clock) do
  redis.call('HSET', KEYS[c[1]], c[2], c[3])
end
return {1, {}}
"""

_FIXED_ARGS = 5  # ARGV[1..5] before the state bodies


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0


class _KeyIndex:
    """The script's KEYS, each named once (Lua indexes from 1)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._index[name] = len(self.keys)
        return index


def lane_increments(msg: LaneAggregates, bin_ms: int) -> tuple[int, Counter[str]]:
    bin_start = msg.interval_start_ms // bin_ms * bin_ms
    incr: Counter[str] = Counter()
    # How long the RSU watched: flow = counts / observed time.
    incr[keys.counts_field(bin_start, msg.camera_id, keys.ALL_LANES, "observed_ms", "-")] += int(
        msg.observed_s * 1000
    )
    for lane in msg.lanes:
        for cls, n in lane.counts.items():
            for row in (lane.lane_id, keys.ALL_LANES):
                incr[keys.counts_field(bin_start, msg.camera_id, row, "count", cls.value)] += n
    for line in msg.lines:
        row = keys.LINE_PREFIX + line.line_id
        for metric, by_class in (("pos", line.positive), ("neg", line.negative)):
            for cls, n in by_class.items():
                incr[keys.counts_field(bin_start, msg.camera_id, row, metric, cls.value)] += n
    return bin_start, incr


class _FrameCounts:
    """Observations of one camera in one bin, summed over a batch's frames: (lane, class)
    pairs are counted first, and each counter's field is built once per batch."""

    def __init__(self) -> None:
        self.frames = 0
        self.pairs: Counter[tuple[str | None, str]] = Counter()

    def add(self, msg: FrameView | FrameObjects) -> None:
        self.frames += 1
        self.pairs.update(map(_LANE_AND_CLASS, msg.objects))

    def fields(self, bin_start: int, camera_id: str, names: _FieldNames) -> Counter[str]:
        incr: Counter[str] = Counter()
        incr[names(bin_start, camera_id, keys.ALL_LANES, "frames", "-")] = self.frames
        for (lane, cls), n in self.pairs.items():
            incr[names(bin_start, camera_id, keys.ALL_LANES, "obs", cls)] += n
            if lane:
                incr[names(bin_start, camera_id, lane, "obs", cls)] += n
        return incr


_LANE_AND_CLASS = attrgetter("lane_id", "category")


class _FieldNames:
    """Counter field names, built once and reused: a camera's frames name the same few
    counters batch after batch, until the bin changes."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._names: dict[tuple[int, str, str, str, str], str] = {}

    def __call__(self, bin_start: int, camera_id: str, lane: str, metric: str, cls: str) -> str:
        parts = (bin_start, camera_id, lane, metric, cls)
        name = self._names.get(parts)
        if name is None:
            if len(self._names) >= self.LIMIT:
                self._names.clear()
            # (The class is a str enum: it joins into the field as its value.)
            name = self._names[parts] = keys.counts_field(*parts)
        return name


def _state_slot(msg: BusMessage) -> tuple[str, int]:
    if msg.kind == "frame":
        return "frame", msg.captured_at_ms  # type: ignore[union-attr]
    if msg.kind == "lane_aggregates":
        return "lanes", msg.interval_start_ms  # type: ignore[union-attr]
    return "health", msg.sent_at_ms  # type: ignore[union-attr]


# A message, its payload, its de-dup bitmap key and its bit there.
_Identified = tuple[BusMessage, bytes, str, int]


class StateWriter:
    def __init__(self, client: redis.Redis, config: StateConfig) -> None:
        self.client = client
        self.config = config
        self.bin_ms = config.bin_s * 1000
        self._script = client.register_script(APPLY_SCRIPT)
        self._field_names = _FieldNames()

    def apply(self, tag: str, messages: list[tuple[BusMessage, bytes]]) -> ApplyResult:
        """Apply one partition's messages (``tag`` is its hash tag) exactly once."""
        return self.apply_partitions({tag: messages})

    def apply_partitions(
        self,
        batches: dict[str, list[tuple[BusMessage, bytes]]],
        clock_ahead_ms: dict[str, dict[str, int]] | None = None,
    ) -> ApplyResult:
        """Apply each partition's messages exactly once, one script call per partition, all
        in one round trip (a round trip costs as much as applying tens of messages).

        ``clock_ahead_ms``: per partition tag, per camera ("rsu_id|camera_id"), how far its
        clock runs ahead of the bus server's, as this batch shows it; stored with the batch.
        """
        result = ApplyResult()
        clocks = clock_ahead_ms or {}
        pending = {tag: self._first_of_each(tag, batch, result) for tag, batch in batches.items()}
        pending = {tag: batch for tag, batch in pending.items() if batch}
        while pending:
            replies = self._run(pending, clocks)
            retry = {}
            for (tag, batch), (ok, duplicates) in zip(pending.items(), replies, strict=True):
                if int(ok):
                    result.applied += len(batch)
                    continue
                # Some were applied before (a redelivery): nothing of this partition's batch
                # was written; apply it again without them.
                drop = {int(i) for i in duplicates}
                result.duplicates += len(drop)
                rest = [m for i, m in enumerate(batch) if i not in drop]
                if rest:
                    retry[tag] = rest
            pending = retry
        return result

    def _run(
        self, pending: dict[str, list[_Identified]], clocks: dict[str, dict[str, int]]
    ) -> list[list[object]]:
        if isinstance(self.client, redis.RedisCluster):
            # redis-py's cluster pipelines refuse scripts: one call per partition.
            return [
                self._script(*self._plan(tag, batch, clocks.get(tag, {})))
                for tag, batch in pending.items()
            ]
        pipe = self.client.pipeline(transaction=False)
        for tag, batch in pending.items():
            keys_, args = self._plan(tag, batch, clocks.get(tag, {}))
            self._script(keys=keys_, args=args, client=pipe)
        return pipe.execute()

    @staticmethod
    def _first_of_each(
        tag: str, messages: list[tuple[BusMessage, bytes]], result: ApplyResult
    ) -> list[_Identified]:
        """Each message once, with its de-dup bitmap key and bit (a batch can hold the same
        message twice: an RSU re-sends what it spooled)."""
        out, identities = [], set()
        for msg, payload in messages:
            seen = keys.seen_key(tag, msg.kind, msg.rsu_id, msg.camera_id, msg.run_id, msg.seq)
            bit = keys.seen_offset(msg.seq)
            if (seen, bit) in identities:
                result.duplicates += 1
                continue
            identities.add((seen, bit))
            out.append((msg, payload, seen, bit))
        return out

    def _plan(
        self, tag: str, messages: list[_Identified], clock: dict[str, int]
    ) -> tuple[list[str], list[object]]:
        key = _KeyIndex()
        seen: dict[str, tuple[list[int], list[int]]] = {}
        frame_counts: dict[tuple[str, str, int], _FrameCounts] = {}
        counts: dict[str, Counter[str]] = {}
        newest: dict[tuple[str, str, str], tuple[int, bytes]] = {}
        registry: set[tuple[str, str]] = set()
        for position, (msg, payload, seen_name, bit) in enumerate(messages):
            bits, positions = seen.get(seen_name) or seen.setdefault(seen_name, ([], []))
            bits.append(bit)
            positions.append(position)
            if msg.kind == "frame":
                bin_start = msg.captured_at_ms // self.bin_ms * self.bin_ms  # type: ignore[union-attr]
                group = (msg.rsu_id, msg.camera_id, bin_start)
                frame = frame_counts.get(group)
                if frame is None:
                    frame = frame_counts[group] = _FrameCounts()
                frame.add(msg)  # type: ignore[arg-type]
            elif isinstance(msg, LaneAggregates):
                bin_start, incr = lane_increments(msg, self.bin_ms)
                counts_name = keys.counts_key(tag, msg.rsu_id, bin_start // keys.HOUR_MS)
                counts.setdefault(counts_name, Counter()).update(incr)
            # Only the newest message per camera and slot can become the state: send only
            # its body (a frame is kilobytes; a batch holds many frames of each camera).
            slot, ts = _state_slot(msg)
            state = (msg.rsu_id, msg.camera_id, slot)
            if state not in newest or ts >= newest[state][0]:
                newest[state] = (ts, payload)
            registry.add((msg.rsu_id, msg.camera_id))
        for (rsu_id, camera_id, bin_start), frame in frame_counts.items():
            counts_name = keys.counts_key(tag, rsu_id, bin_start // keys.HOUR_MS)
            incr = frame.fields(bin_start, camera_id, self._field_names)
            counts.setdefault(counts_name, Counter()).update(incr)
        bodies: list[bytes] = []
        states = []
        for (rsu_id, camera_id, slot), (ts, payload) in newest.items():
            bodies.append(payload)
            states.append(
                [
                    key(keys.state_key(tag, rsu_id, camera_id)),
                    slot,
                    str(ts),
                    _FIXED_ARGS + len(bodies),
                ]
            )
        registry_index = key(keys.registry_key(tag))
        plan = {
            "seen": [[key(name), bits, positions] for name, (bits, positions) in seen.items()],
            "counts": [
                [key(name), *[x for field_n in incr.items() for x in field_n]]
                for name, incr in counts.items()
            ],
            "states": states,
            "registry": [
                [
                    registry_index,
                    f"{rsu_id}{keys.FIELD_SEP}{camera_id}",
                    key(keys.rsu_cameras_key(tag, rsu_id)),
                    camera_id,
                ]
                for rsu_id, camera_id in sorted(registry)
            ],
            "clock": [[key(keys.clock_key(tag)), field, ms] for field, ms in clock.items()],
        }
        args: list[object] = [
            self.config.counts_retention_s,
            self.config.dedup_ttl_s,
            int(time.time() * 1000),
            orjson.dumps(plan),
            int(self.config.stale_after_s * 1000),
            *bodies,
        ]
        return key.keys, args
