"""Applying a batch of validated messages to the traffic state, exactly once.

One Lua script per partition batch does, atomically for every message: mark its identity in a
de-dup bitmap (``SETBIT`` returns the old bit, so a redelivered message is recognised and
skipped), add its binned counts (``HINCRBY``), and keep the newest frame/health/lane state per
camera.  Because the marks and the counts change together, a worker killed between applying a
batch and acking it can have the batch redelivered without anything being counted twice.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import orjson
import redis

from citybrain import keys
from citybrain.config import StateConfig
from common.schemas import FrameObjects, LaneAggregates, RsuHealth

APPLY_SCRIPT = """
local counts_ttl = ARGV[1]
local seen_ttl = ARGV[2]
local now_ms = ARGV[3]
local ops = cjson.decode(ARGV[4])
local applied, duplicates = 0, 0
for _, op in ipairs(ops) do
  -- op = {seen_key, bit, counts_key or 0, {field, n, ...}, state_key, slot, ts, body_argv,
  --       registry_key, registry_field}
  local seen = KEYS[op[1]]
  if redis.call('SETBIT', seen, op[2], 1) == 1 then
    duplicates = duplicates + 1
  else
    applied = applied + 1
    redis.call('EXPIRE', seen, seen_ttl)
    if op[3] > 0 then
      local counts = KEYS[op[3]]
      local incr = op[4]
      for i = 1, #incr, 2 do
        redis.call('HINCRBY', counts, incr[i], incr[i + 1])
      end
      redis.call('EXPIRE', counts, counts_ttl)
    end
    -- op[8] == 0: a newer message of the same camera and slot in this batch writes the state
    if op[8] > 0 then
      local state = KEYS[op[5]]
      local slot = op[6]
      local current = redis.call('HGET', state, slot .. '_ts')
      if (not current) or tonumber(current) < tonumber(op[7]) then
        redis.call('HSET', state, slot .. '_ts', op[7], slot, ARGV[op[8]],
                   slot .. '_ingested_ms', now_ms)
      end
    end
    redis.call('HSET', KEYS[op[9]], op[10], now_ms)
  end
end
return {applied, duplicates}
"""

AnyMessage = FrameObjects | LaneAggregates | RsuHealth


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0


class _Batch:
    """Builds the script's KEYS/ARGV for one partition, indexing each key once."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._key_index: dict[str, int] = {}
        self.bodies: list[bytes] = []
        self.ops: list[list[object]] = []

    def key(self, name: str) -> int:
        index = self._key_index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._key_index[name] = len(self.keys)  # Lua is 1-based
        return index

    def body(self, payload: bytes) -> int:
        self.bodies.append(payload)
        return 4 + len(self.bodies)  # ARGV[1..4] are fixed


def frame_increments(msg: FrameObjects, bin_ms: int) -> tuple[int, Counter[str]]:
    bin_start = msg.captured_at_ms // bin_ms * bin_ms
    # Count (lane, class) pairs first, then build each field once: a frame has tens of
    # objects but only a handful of distinct pairs.
    # (The class is a str enum: it joins into the field as its value, without .value.)
    pairs = Counter([(obj.lane_id, obj.category) for obj in msg.objects])
    incr: Counter[str] = Counter()
    incr[keys.counts_field(bin_start, msg.camera_id, "*", "frames", "-")] = 1
    for (lane, cls), n in pairs.items():
        incr[keys.counts_field(bin_start, msg.camera_id, "*", "obs", cls)] += n
        if lane:
            incr[keys.counts_field(bin_start, msg.camera_id, lane, "obs", cls)] += n
    return bin_start, incr


def lane_increments(msg: LaneAggregates, bin_ms: int) -> tuple[int, Counter[str]]:
    bin_start = msg.interval_start_ms // bin_ms * bin_ms
    incr: Counter[str] = Counter()
    # How long the RSU watched: flow = counts / observed time.
    incr[keys.counts_field(bin_start, msg.camera_id, "*", "observed_ms", "-")] += int(
        msg.observed_s * 1000
    )
    for lane in msg.lanes:
        for cls, n in lane.counts.items():
            incr[keys.counts_field(bin_start, msg.camera_id, lane.lane_id, "count", cls.value)] += n
            incr[keys.counts_field(bin_start, msg.camera_id, "*", "count", cls.value)] += n
    for line in msg.lines:
        row = keys.LINE_PREFIX + line.line_id
        for metric, by_class in (("pos", line.positive), ("neg", line.negative)):
            for cls, n in by_class.items():
                incr[keys.counts_field(bin_start, msg.camera_id, row, metric, cls.value)] += n
    return bin_start, incr


def _state_time(msg: AnyMessage) -> int:
    if isinstance(msg, FrameObjects):
        return msg.captured_at_ms
    if isinstance(msg, LaneAggregates):
        return msg.interval_start_ms
    return msg.sent_at_ms


class StateWriter:
    def __init__(self, client: redis.Redis, config: StateConfig) -> None:
        self.client = client
        self.config = config
        self.bin_ms = config.bin_s * 1000
        self._script = client.register_script(APPLY_SCRIPT)

    def _op(self, batch: _Batch, tag: str, msg: AnyMessage, payload: bytes, newest: bool) -> None:
        seen = batch.key(
            keys.seen_key(tag, msg.kind, msg.rsu_id, msg.camera_id, msg.run_id, msg.seq)
        )
        counts_index, flat = 0, []
        if isinstance(msg, FrameObjects):
            bin_start, incr = frame_increments(msg, self.bin_ms)
            slot, ts = "frame", msg.captured_at_ms
        elif isinstance(msg, LaneAggregates):
            bin_start, incr = lane_increments(msg, self.bin_ms)
            slot, ts = "lanes", msg.interval_start_ms
        else:
            bin_start, incr = 0, Counter()
            slot, ts = "health", msg.sent_at_ms
        if incr:
            counts_index = batch.key(keys.counts_key(tag, msg.rsu_id, bin_start // keys.HOUR_MS))
            for field, n in incr.items():
                flat += [field, n]
        batch.ops.append(
            [
                seen,
                keys.seen_offset(msg.seq),
                counts_index,
                flat,
                batch.key(keys.state_key(tag, msg.rsu_id, msg.camera_id)),
                slot,
                str(ts),
                batch.body(payload) if newest else 0,
                batch.key(keys.registry_key(tag)),
                f"{msg.rsu_id}{keys.FIELD_SEP}{msg.camera_id}",
            ]
        )

    def apply(self, tag: str, messages: list[tuple[AnyMessage, bytes]]) -> ApplyResult:
        """Apply one partition's messages (``tag`` is its hash tag) in one atomic script call."""
        if not messages:
            return ApplyResult()
        batch = _Batch()
        # Only the newest message per camera and slot can become the state: send only its
        # body (a frame is kilobytes; a batch holds many frames of each camera).
        newest: dict[tuple[str, str, str], tuple[int, int]] = {}
        for i, (msg, _) in enumerate(messages):
            key = (msg.rsu_id, msg.camera_id, msg.kind)
            stamp = _state_time(msg)
            if key not in newest or stamp >= newest[key][0]:
                newest[key] = (stamp, i)
        winners = {i for _, i in newest.values()}
        for i, (msg, payload) in enumerate(messages):
            self._op(batch, tag, msg, payload, i in winners)
        args: list[object] = [
            self.config.counts_retention_s,
            self.config.dedup_ttl_s,
            int(time.time() * 1000),
            orjson.dumps(batch.ops),
            *batch.bodies,
        ]
        applied, duplicates = self._script(keys=batch.keys, args=args)
        return ApplyResult(int(applied), int(duplicates))
