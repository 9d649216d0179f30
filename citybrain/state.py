"""Reading the traffic state that ingest writes (see :mod:`citybrain.keys`)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from citybrain import keys
from citybrain.config import CitybrainConfig
from citybrain.dead_letters import DeadLetters
from common.bus import (
    GroupView,
    LossLedger,
    discover_streams,
    group_views,
    lag_of,
    partition_tag,
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class CountBin:
    start_ms: int
    camera_id: str
    lane_id: str
    frames: int = 0
    observed_ms: int = 0  # camera rows: time covered by the RSU's lane intervals
    observations: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    positive: dict[str, int] = field(default_factory=dict)
    negative: dict[str, int] = field(default_factory=dict)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TrafficState:
    def __init__(self, client: redis.Redis, config: CitybrainConfig) -> None:
        self.client = client
        self.config = config
        self.partitions = config.bus.partitions

    def _tag(self, rsu_id: str) -> str:
        return keys.rsu_tag(rsu_id, self.partitions)

    def registry(self) -> dict[str, dict[str, int]]:
        """rsu_id -> {camera_id: last ingest time ms}."""
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hgetall(keys.registry_key(partition_tag(p)))
        rsus: dict[str, dict[str, int]] = defaultdict(dict)
        for entries in pipe.execute():
            for name, seen in entries.items():
                rsu_id, camera_id = _text(name).split(keys.FIELD_SEP, 1)
                rsus[rsu_id][camera_id] = int(seen)
        return dict(sorted(rsus.items()))

    def clock_ahead(self) -> dict[tuple[str, str], int]:
        """(rsu_id, camera_id) -> how far its clock ran ahead of the bus server's in its
        latest batch, in ms (negative: behind, or its messages were delayed)."""
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hgetall(keys.clock_key(partition_tag(p)))
        out: dict[tuple[str, str], int] = {}
        for entries in pipe.execute():
            for name, ms in entries.items():
                rsu_id, camera_id = _text(name).split(keys.FIELD_SEP, 1)
                out[(rsu_id, camera_id)] = int(ms)
        return out

    def cameras(self, rsu_id: str) -> dict[str, int]:
        """camera_id -> last ingest time ms, of the cameras ``rsu_id`` reported from."""
        tag = self._tag(rsu_id)
        own = self.client.hgetall(keys.rsu_cameras_key(tag, rsu_id))
        if own:
            return {_text(k): int(v) for k, v in own.items()}
        # An RSU not heard from since before the per-RSU index existed (or never): look in
        # the partition's registry, which every version wrote.
        entries = self.client.hgetall(keys.registry_key(tag))
        prefix = rsu_id + keys.FIELD_SEP
        return {
            _text(k)[len(prefix) :]: int(v)
            for k, v in entries.items()
            if _text(k).startswith(prefix)
        }

    def latest_frames(self, cameras: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """The latest stored frame of each (rsu_id, camera_id), in one round trip."""
        cameras = list(cameras)
        pipe = self.client.pipeline(transaction=False)
        for rsu_id, camera_id in cameras:
            pipe.hget(keys.state_key(self._tag(rsu_id), rsu_id, camera_id), "frame")
        return {
            cam: orjson.loads(raw)
            for cam, raw in zip(cameras, pipe.execute(), strict=True)
            if raw is not None
        }

    def latest_frame_times(self, cameras: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The capture time (ms) of the latest stored frame of each (rsu_id, camera_id), in one
        round trip, without reading the frames themselves."""
        cameras = list(cameras)
        pipe = self.client.pipeline(transaction=False)
        for rsu_id, camera_id in cameras:
            pipe.hget(keys.state_key(self._tag(rsu_id), rsu_id, camera_id), "frame_ts")
        replies = pipe.execute()
        return {cam: int(raw) for cam, raw in zip(cameras, replies, strict=True) if raw is not None}

    def camera_states(
        self, rsu_id: str, cameras: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """camera_id -> {frame, health, lanes (parsed messages), *_ingested_ms, and
        clock_ahead_ms once measured}.

        ``cameras``: the RSU's camera ids when the caller already read the registry.
        """
        cameras = sorted(self.cameras(rsu_id) if cameras is None else cameras)
        if not cameras:
            return {}
        tag = self._tag(rsu_id)
        pipe = self.client.pipeline(transaction=False)
        for camera_id in cameras:
            pipe.hgetall(keys.state_key(tag, rsu_id, camera_id))
        pipe.hmget(keys.clock_key(tag), [f"{rsu_id}{keys.FIELD_SEP}{c}" for c in cameras])
        *replies, clocks = pipe.execute()
        states: dict[str, dict[str, Any]] = {}
        for camera_id, raw, clock in zip(cameras, replies, clocks, strict=True):
            entry: dict[str, Any] = {} if clock is None else {"clock_ahead_ms": int(clock)}
            for name, value in raw.items():
                name = _text(name)
                if name in ("frame", "health", "lanes"):
                    entry[name] = orjson.loads(value)
                else:
                    entry[name] = int(float(value))
            states[camera_id] = entry
        return states

    def counts(
        self,
        rsu_id: str,
        since_ms: int,
        until_ms: int,
        bin_s: int,
        camera_id: str | None = None,
        lane_id: str | None = None,
    ) -> list[CountBin]:
        """Binned counts in [since, until), re-binned to ``bin_s`` (a multiple of the base bin)."""
        tag = self._tag(rsu_id)
        bin_ms = bin_s * 1000
        hours = range(since_ms // keys.HOUR_MS, (until_ms - 1) // keys.HOUR_MS + 1)
        pipe = self.client.pipeline(transaction=False)
        for hour in hours:
            pipe.hgetall(keys.counts_key(tag, rsu_id, hour))
        bins: dict[tuple[int, str, str], CountBin] = {}
        for entries in pipe.execute():
            for name, value in entries.items():
                start, camera, lane, metric, cls = _text(name).split(keys.FIELD_SEP)
                start_ms = int(start)
                if not since_ms <= start_ms < until_ms:
                    continue
                if (camera_id and camera != camera_id) or (lane_id and lane != lane_id):
                    continue
                query_start = start_ms // bin_ms * bin_ms
                row = bins.get((query_start, camera, lane))
                if row is None:
                    row = bins[(query_start, camera, lane)] = CountBin(query_start, camera, lane)
                n = int(value)
                if metric == "frames":
                    row.frames += n
                elif metric == "observed_ms":
                    row.observed_ms += n
                elif metric == "obs":
                    row.observations[cls] = row.observations.get(cls, 0) + n
                else:
                    target = {"count": row.counts, "pos": row.positive, "neg": row.negative}[metric]
                    target[cls] = target.get(cls, 0) + n
        return [bins[k] for k in sorted(bins)]

    def dead_letters(self) -> int:
        return DeadLetters(self.client, self.partitions).count()

    def streams(self) -> list[str]:
        """Every RSU stream (what :meth:`group_views` reads when given none)."""
        return discover_streams(self.client, self.partitions)

    def group_views(self, streams: list[str] | None = None) -> list[GroupView]:
        """Every RSU stream as the ingest group sees it, in one pass: pass it to the methods
        below, so that /health reads each stream's group once, however many RSUs."""
        streams = self.streams() if streams is None else streams
        return group_views(self.client, streams, self.config.ingest.group)

    def ingest_lag(self, views: list[GroupView] | None = None) -> dict[str, int]:
        """Entries not yet read by the ingest group, and entries read but not yet acked."""
        unread, pending = lag_of(self.group_views() if views is None else views)
        return {"unread": unread, "pending": pending}

    def lost_entries(self, views: list[GroupView] | None = None) -> int:
        """Bus entries trimmed before ingest read them (see common.bus.trimmed_unread)."""
        views = self.group_views() if views is None else views
        return LossLedger(self.client).total(views)

    def oldest_unread_age_ms(self, views: list[GroupView] | None = None) -> int | None:
        """Age of the oldest entry the ingest group has not yet read, over all streams.

        Stream ids start with their server time in ms, so the first id after the group's
        last-delivered id tells how far behind ingest is, in time.  That entry came after
        the last delivered one, whose time is thus a bound: streams are looked at from the
        lowest bound up, and no further once none left could be older by more than
        ``AGE_PRECISION_MS`` (a live city has thousands of streams a few entries behind).
        """
        views = self.group_views() if views is None else views
        behind = sorted(
            (v for v in views if v.unread > 0),
            key=lambda v: _id_ms(v.delivered) if v.delivered else 0,
        )
        oldest: int | None = None
        for start in range(0, len(behind), AGE_CHUNK):
            chunk = behind[start : start + AGE_CHUNK]
            bound = _id_ms(chunk[0].delivered) if chunk[0].delivered else 0
            if oldest is not None and bound >= oldest - AGE_PRECISION_MS:
                break
            pipe = self.client.pipeline(transaction=False)
            for v in chunk:
                pipe.xrange(v.stream, min=b"(" + v.delivered if v.delivered else b"-", count=1)
            for entries in pipe.execute(raise_on_error=False):
                if isinstance(entries, Exception) or not entries:
                    continue
                stamp = _id_ms(entries[0][0])
                oldest = stamp if oldest is None else min(oldest, stamp)
        return None if oldest is None else max(0, now_ms() - oldest)


AGE_CHUNK = 64
AGE_PRECISION_MS = 500


def _id_ms(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-")[0])
