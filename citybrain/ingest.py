"""The ingest worker: consumer group -> validate -> apply exactly once -> ack.

Order matters: a batch is applied (atomically, with de-dup marks) before it is acked.  A
worker that dies in between leaves the entries pending; they are redelivered to it when it
restarts under the same name, or claimed by another worker after ``claim_idle_ms``, and the
de-dup marks make the second application a no-op.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass

import redis

from citybrain import keys
from citybrain.apply import StateWriter
from citybrain.config import CitybrainConfig
from citybrain.history import HistoryError, HistoryStore, open_history, rows_of
from common.bus import (
    Delivery,
    StreamConsumer,
    connect,
    dead_letter_key,
    parse_stream,
    partition_tag,
)
from common.frame_codec import LANE_ID, BusMessage, decode_for_ingest
from common.gc_policy import favour_throughput
from common.schemas import MessageError

log = logging.getLogger("citybrain.ingest")

# Test-only failpoint: kill this process with SIGKILL after applying N batches, before acking.
CRASH_AFTER_APPLY_ENV = "CITYBRAIN_FAILPOINT_CRASH_AFTER_APPLY"


@dataclass
class IngestStats:
    batches: int = 0
    delivered: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    history_rows: int = 0
    history_failures: int = 0
    redis_failures: int = 0


class IngestWorker:
    def __init__(
        self,
        config: CitybrainConfig,
        client: redis.Redis | None = None,
        history: HistoryStore | None = None,
    ) -> None:
        self.config = config
        if history is None and config.history.enabled:
            history = open_history(config.history.url)
        self.history = history
        self.client = client or connect(config.bus.redis_url, config.bus.cluster)
        ingest = config.ingest
        self.consumer = StreamConsumer(
            self.client,
            config.bus.partitions,
            ingest.group,
            ingest.consumer_name(),
            batch=ingest.batch,
            block_ms=ingest.block_ms,
            claim_idle_ms=ingest.claim_idle_ms,
            claim_interval_s=ingest.claim_interval_s,
        )
        self.writer = StateWriter(self.client, config.state)
        self.stats = IngestStats()
        # RSU publish -> applied here, per frame message (the latest ones), for benchmarks.
        self.publish_to_state_ms: deque[int] = deque(maxlen=200_000)
        self._stop = False
        crash = os.environ.get(CRASH_AFTER_APPLY_ENV)
        self._crash_after = int(crash) if crash else None

    def stop(self, *_: object) -> None:
        self._stop = True

    def step(self) -> int:
        """Read, apply and ack one batch; returns how many entries it handled."""
        deliveries = self.consumer.read()
        if not deliveries:
            return 0
        by_partition: dict[int, list[tuple[BusMessage, bytes]]] = {}
        clock_ahead: dict[int, dict[str, int]] = {}
        valid: list[Delivery] = []
        limit = self.config.ingest.max_message_bytes
        for delivery in deliveries:
            partition, stream_rsu = parse_stream(delivery.stream) or (0, "")
            if delivery.payload is None:
                self._dead_letter(delivery, partition, "entry has no 'm' payload field")
                continue
            if len(delivery.payload) > limit:
                reason = f"message of {len(delivery.payload)} bytes exceeds {limit} bytes"
                self._dead_letter(delivery, partition, reason)
                continue
            try:
                message = decode_for_ingest(delivery.payload)
            except MessageError as exc:
                self._dead_letter(delivery, partition, str(exc))
                continue
            if message.rsu_id != stream_rsu:
                # An RSU may only speak for itself: its credentials write its stream only.
                reason = f"message from rsu_id {message.rsu_id!r} on the stream of {stream_rsu!r}"
                self._dead_letter(delivery, partition, reason)
                continue
            if reason := _reserved_lane(message):
                self._dead_letter(delivery, partition, reason)
                continue
            by_partition.setdefault(partition, []).append((message, delivery.payload))
            valid.append(delivery)
            if message.kind != "lane_aggregates":
                _note_clock(clock_ahead.setdefault(partition, {}), message, delivery.entry_id)
        result = self.writer.apply_partitions(
            {partition_tag(p): messages for p, messages in by_partition.items()},
            {partition_tag(p): cameras for p, cameras in clock_ahead.items()},
        )
        applied_at = int(time.time() * 1000)
        self.publish_to_state_ms.extend(
            applied_at - m.published_at_ms
            for messages in by_partition.values()
            for m, _ in messages
            if m.kind == "frame"
        )
        self.stats.applied += result.applied
        self.stats.duplicates += result.duplicates
        if self.history is not None:
            # Idempotent by each interval's identity, so a redelivered batch adds nothing.
            rows = rows_of(m for batch in by_partition.values() for m, _ in batch)
            if rows:
                self.stats.history_rows += self.history.write(rows)
        self.stats.batches += 1
        self.stats.delivered += len(deliveries)
        if self._crash_after is not None and self.stats.batches >= self._crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.consumer.ack(valid)
        return len(deliveries)

    def _dead_letter(self, delivery: Delivery, partition: int, reason: str) -> None:
        log.warning("dead-lettering %s %s: %s", delivery.stream, delivery.entry_id, reason)
        self.consumer.dead_letter(
            delivery, reason, dead_letter_key(partition), self.config.ingest.max_message_bytes
        )
        self.stats.dead_lettered += 1

    def run(self, idle_exit_s: float | None = None) -> IngestStats:
        """Loop until stopped (SIGTERM/SIGINT), or until idle for ``idle_exit_s``."""
        favour_throughput()
        self.consumer.ensure_groups()
        log.info(
            "ingest worker %s in group %s on %d partitions",
            self.consumer.consumer,
            self.consumer.group,
            len(self.consumer.streams),
        )
        last_work = time.monotonic()
        last_report = time.monotonic()
        while not self._stop:
            try:
                handled = self.step()
            except redis.ConnectionError as exc:
                log.error("Redis unavailable (%s); retrying in 1 s", exc)
                self.stats.redis_failures += 1
                self.consumer.rewind()
                time.sleep(1.0)
                continue
            except HistoryError as exc:
                # Not acked: the batch stays pending and is read again (state de-duplicates).
                log.error("history store unavailable (%s); retrying in 1 s", exc)
                self.stats.history_failures += 1
                self.consumer.rewind()
                time.sleep(1.0)
                continue
            now = time.monotonic()
            if handled:
                last_work = now
            elif idle_exit_s is not None and now - last_work >= idle_exit_s:
                break
            if now - last_report >= 10.0:
                last_report = now
                log.info("ingest stats %s", self.stats)
        return self.stats


def _note_clock(cameras: dict[str, int], message: BusMessage, entry_id: bytes) -> None:
    """How far the camera's clock runs ahead of the bus server's: when the message says it
    was sent, less when the server added it (the first part of a stream entry's id).

    Network delay and an RSU's spool make every message look later than it was sent, so
    the batch's largest value, its least delayed message, is kept.
    """
    sent = message.published_at_ms if message.kind == "frame" else message.sent_at_ms  # type: ignore[union-attr]
    ahead = sent - int(entry_id.split(b"-", 1)[0])
    camera = f"{message.rsu_id}{keys.FIELD_SEP}{message.camera_id}"
    if ahead > cameras.get(camera, ahead - 1):
        cameras[camera] = ahead


def _reserved_lane(message: BusMessage) -> str | None:
    """Why a lane id of ``message`` cannot be stored, or None.  The counts rows of a camera
    are named by lane id, and two names are taken: "*", the camera's total (its counts would
    be added to the total twice), and "line:<id>", the rows of counting lines (a lane
    "line:x" would share counting line x's row).

    Checked on the decoded ids (about 1 us a frame of 30 road users): a search of the bytes
    for "line:" took 4.5 us, as the letters and the ":" fill every JSON frame.
    """
    if message.kind == "frame":
        lanes = set(map(LANE_ID, message.objects))  # type: ignore[union-attr]
    elif message.kind == "lane_aggregates":
        lanes = set(map(LANE_ID, message.lanes))  # type: ignore[union-attr]
    else:
        return None
    if keys.ALL_LANES in lanes:
        return f"lane id {keys.ALL_LANES!r} is reserved for the camera's total"
    named_as_lines = sorted(lane for lane in lanes if lane and lane.startswith(keys.LINE_PREFIX))
    if named_as_lines:
        return (
            f"lane id {named_as_lines[0]!r}: the prefix {keys.LINE_PREFIX!r} is reserved for "
            "counting lines"
        )
    return None


def install_signal_handlers(worker: IngestWorker) -> None:
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
