"""Acceptance: counting on the full intersection clip, checked by eye against the video.

Frames reviewed: the south stop line (y = 378, x 258-486) is crossed northbound by five
vehicles: the green taxi (frames 30-55), a dark sedan (~100), a white van (~120, at the
line's left end), a white SUV (~145) and a silver sedan (~205); nothing crosses it
southbound.  An articulated bus turning in from the right edge (~178) never crosses the
outbound counting line: only its cut-off box did.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from common.bus import discover_streams
from rsu.replay import ReplaySummary, run_replay

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "replay_data" / "intersection_beijing.yaml"


@pytest.fixture(scope="module")
def full_clip(redis_server) -> tuple[ReplaySummary, list[dict]]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    summary = run_replay(SCENE, overrides={"bus": {"redis_url": redis_server.url}}, progress=False)
    messages = [
        orjson.loads(fields[b"m"])
        for s in discover_streams(client, 8)
        for _, fields in client.xrange(s)
    ]
    client.close()
    return summary, messages


def line_totals(messages: list[dict], line_id: str) -> tuple[Counter[str], Counter[str]]:
    positive, negative = Counter[str](), Counter[str]()
    for m in messages:
        if m["kind"] == "lane_aggregates":
            for line in m["lines"]:
                if line["line_id"] == line_id:
                    positive.update(line.get("positive", {}))
                    negative.update(line.get("negative", {}))
    return positive, negative


def test_stop_line_counts_the_five_vehicles_entering(full_clip) -> None:
    summary, messages = full_clip
    assert summary.frames == 252
    positive, negative = line_totals(messages, "S_stop")
    assert sum(negative.values()) == 5, negative
    assert sum(positive.values()) == 0, positive


def test_a_bus_cut_off_by_the_frame_edge_is_not_counted(full_clip) -> None:
    _, messages = full_clip
    positive, negative = line_totals(messages, "S_out_count")
    assert "bus" not in negative and "bus" not in positive


def test_lane_counts_come_from_the_lanes_the_vehicles_left(full_clip) -> None:
    _, messages = full_clip
    lanes: Counter[str] = Counter()
    aggregates = [m for m in messages if m["kind"] == "lane_aggregates"]
    for m in aggregates:
        for lane in m["lanes"]:
            lanes[lane["lane_id"]] += sum(lane.get("counts", {}).values())
    # Four of the five came from the two left-turn lanes; the van used the lane to their left.
    assert lanes["S_in_1"] + lanes["S_in_2"] == 4, lanes
    assert lanes["S_in_0"] == 1, lanes
    # 10 s bins aligned to the clock: what they observed adds up to the clip's 8.4 s.
    assert all(m["interval_s"] == 10.0 for m in aggregates)
    assert sum(m["observed_s"] for m in aggregates) == pytest.approx(252 / 30, abs=0.05)
