"""History of lane aggregates in 1- and 5-minute bins, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citybrain.history import HistoryError, HistoryStore, LaneRow, open_history

T0 = 1_763_800_000_000 // 300_000 * 300_000  # a 5-minute boundary


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/history.db"
    else:
        url = request.getfixturevalue("postgres_url")
    history = open_history(url)
    yield history
    history.close()


def row(seq: int, start_s: float, lane: str = "S1", **values: object) -> LaneRow:
    fields: dict[str, object] = {
        "rsu_id": "r1", "camera_id": "cam0", "run_id": "run", "seq": seq, "lane_id": lane,
        "approach": "south", "interval_start_ms": T0 + int(start_s * 1000), "observed_s": 10.0,
        "counts": {"car": 2}, "mean_speed_mps": None, "occupancy": None,
        "queue_vehicles": None, "queue_m": None,
    }  # fmt: skip
    fields.update(values)
    return LaneRow(**fields)  # type: ignore[arg-type]


def test_redelivered_intervals_are_counted_once(store: HistoryStore) -> None:
    first = [row(0, 0), row(1, 10)]
    assert store.write(first) == 2
    assert store.write(first) == 0  # at-least-once: the same messages again
    assert store.write([row(1, 10), row(2, 20)]) == 1
    (minute,) = store.bins("r1", 60, T0, T0 + 60_000)
    assert minute.counts == {"car": 6} and minute.observed_s == 30.0
    assert minute.flow_veh_h == pytest.approx(6 * 3600 / 30)


def test_bins_weight_speed_and_occupancy_by_time_and_keep_the_longest_queue(
    store: HistoryStore,
) -> None:
    store.write([
        row(0, 0, counts={"car": 1, "bus": 1, "person": 3}, mean_speed_mps=10.0,
            occupancy=0.5, queue_vehicles=2, queue_m=12.5),
        row(1, 10, observed_s=5.0, counts={}, mean_speed_mps=None, occupancy=0.2,
            queue_vehicles=None, queue_m=None),
        row(2, 20, counts={"truck": 1}, mean_speed_mps=4.0, occupancy=0.0,
            queue_vehicles=5, queue_m=8.0),
        row(3, 60, counts={"car": 4}),  # the next minute
    ])  # fmt: skip
    first, second = store.bins("r1", 60, T0, T0 + 120_000)
    assert first.counts == {"person": 3, "car": 1, "bus": 1, "truck": 1}
    assert first.vehicles == 3  # people are counted but are not traffic flow
    assert first.observed_s == 25.0
    assert first.flow_veh_h == pytest.approx(3 * 3600 / 25, abs=0.1)
    assert first.mean_speed_mps == pytest.approx((10 * 10 + 4 * 10) / 20)
    assert first.occupancy == pytest.approx((0.5 * 10 + 0.2 * 5) / 25, abs=1e-3)
    assert (first.queue_max_vehicles, first.queue_max_m) == (5, 12.5)
    assert second.bin_start_ms == T0 + 60_000 and second.vehicles == 4
    (five,) = store.bins("r1", 300, T0, T0 + 300_000)
    assert five.vehicles == 7 and five.observed_s == 35.0


def test_queries_filter_by_camera_lane_range_and_limit(store: HistoryStore) -> None:
    store.write([row(0, 0, lane="S1"), row(0, 0, lane="S2"), row(1, 70, lane="S1")])
    store.write([row(0, 0, lane="S1", camera_id="cam1")])
    assert len(store.bins("r1", 60, T0, T0 + 120_000)) == 4
    assert len(store.bins("r1", 60, T0, T0 + 120_000, camera_id="cam0")) == 3
    lane = store.bins("r1", 60, T0, T0 + 120_000, camera_id="cam0", lane_id="S1")
    assert [b.bin_start_ms for b in lane] == [T0, T0 + 60_000]
    assert len(store.bins("r1", 60, T0 + 60_000, T0 + 120_000)) == 1  # since is inclusive
    assert len(store.bins("r1", 60, T0, T0 + 120_000, limit=2)) == 2
    assert store.bins("other", 60, T0, T0 + 120_000) == []
    with pytest.raises(HistoryError, match="bin_s must be one of"):
        store.bins("r1", 10, T0, T0 + 1)


def test_pruning_raw_intervals_keeps_the_bins(store: HistoryStore) -> None:
    store.write([row(0, 0), row(1, 400)])
    assert store.prune(T0 + 300_000) == 1
    assert len(store.bins("r1", 300, T0, T0 + 600_000)) == 2
    # A pruned interval redelivered later would count again: prune only what is far older
    # than the de-duplication window (see HistoryConfig.raw_retention_s).


def test_bad_urls_and_unreachable_servers_are_named(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="use sqlite:///FILE or postgresql://"):
        open_history("mysql://x")
    with pytest.raises(HistoryError, match=r"cannot open PostgreSQL history .*:\*\*\*@127"):
        open_history("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=1")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(HistoryError, match="cannot open history database"):
        open_history(str(tmp_path / "dir.db"))
