"""Online forecasts from citybrain's own history: the exported model where it can, the
fallbacks (saying why) where it cannot, never NaN or negative, served by the API."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from citybrain.config import CitybrainConfig
from citybrain.forecast.data import SeriesSet, load_history
from citybrain.forecast.online import ForecastService, OnlineModel
from citybrain.history import LaneRow, open_history
from tests.conftest import api_client

DAY_MS = 86_400_000
T0 = 1_763_596_800_000  # a midnight, UTC
LANES = [("rsu-a", "L1", 300), ("rsu-a", "L2", 600), ("rsu-b", "N1", 900)]


def write_history(store, days: int, lanes=LANES) -> None:
    rows = []
    for rsu, lane, level in lanes:
        for k in range(days * 288):
            slot = k % 288
            flow = level * (1 + 0.6 * np.sin(slot / 288 * 2 * np.pi))  # veh/h
            vehicles = round(flow * 300 / 3600)
            rows.append(
                LaneRow(rsu, "cam0", "r", k, lane, "south", T0 + k * 300_000, 300.0,
                        {"car": vehicles}, 8.0, 0.2, 1, 5.0)
            )  # fmt: skip
    store.write(rows)


def test_online_forecasts_use_the_model_or_say_why_not(
    tmp_path: Path, redis_url: str, redis_client
) -> None:
    pytest.importorskip("torch", reason="exporting a model needs PyTorch (make install adds it)")
    from citybrain.forecast.commands import export_onnx
    from citybrain.forecast.model import TrainConfig, train
    from citybrain.forecast.protocol import chronological_split

    store = open_history(f"sqlite:///{tmp_path}/h.db")
    write_history(store, days=3)
    now = T0 + 3 * DAY_MS + 60_000
    service = ForecastService(store, redis_client)
    series = service.history_series(T0, T0 + 3 * DAY_MS)
    assert series.ids == ["rsu-a/cam0/L1", "rsu-a/cam0/L2", "rsu-b/cam0/N1"]
    config = TrainConfig(hidden=16, epochs=3, max_train_windows=100)
    trained = train("forecaster", series, chronological_split(len(series.values)), config,
                    progress=False)  # fmt: skip
    export_onnx(trained, tmp_path / "m.onnx", series.ids, series.interval_s)
    # A new lane with one bin of history: the model does not know it.
    write_history(store, days=1, lanes=[("rsu-c", "E1", 400)])

    model = OnlineModel.load(tmp_path / "m.onnx")  # serve's default: the int8 weights
    recent = SeriesSet(series.values[-12:], int(series.times_ms[-12]), 300, series.ids)
    exact = OnlineModel.load(tmp_path / "m.onnx", precision="fp32").predict(recent)
    # The int8 weights move a forecast of flows around 300 veh/h by a few veh/h at most.
    assert model.predict(recent) == pytest.approx(exact, abs=5.0)
    assert not np.array_equal(model.predict(recent), exact)  # it is the int8 model
    if importlib.util.find_spec("openvino") is not None:  # the openvino extra
        by_openvino = OnlineModel.load(tmp_path / "m.onnx", "openvino", "fp32").predict(recent)
        assert by_openvino == pytest.approx(exact, rel=1e-3, abs=0.5)
        in_bf16 = OnlineModel.load(tmp_path / "m.onnx", "openvino").predict(recent)
        assert in_bf16 == pytest.approx(exact, abs=5.0)
    with pytest.raises(ValueError, match="unknown forecast runtime"):
        OnlineModel.load(tmp_path / "m.onnx", "tensorrt")
    forecasts = {f.detector: f for f in ForecastService(store, redis_client, model).run_once(now)}
    assert set(forecasts) == {*series.ids, "rsu-c/cam0/E1"}
    for detector in series.ids:
        f = forecasts[detector]
        assert f.method == "model" and f.reason is None and len(f.flows_veh_h) == 12
    newcomer = forecasts["rsu-c/cam0/E1"]
    assert newcomer.method in ("historical_average", "last_value")
    assert newcomer.reason == "unknown to the model"
    for f in forecasts.values():
        assert all(np.isfinite(v) and v >= 0 for v in f.flows_veh_h)
    # The model's forecast of a smooth daily wave is near it (the wave is 300 veh/h +-60%).
    first = forecasts["rsu-a/cam0/L1"].flows_veh_h[0]
    assert 100 < first < 500

    config_api = CitybrainConfig.model_validate({"bus": {"redis_url": redis_url}})
    api = api_client(config_api, "operator", redis_client)
    one = api.get("/forecasts", params={"detector": "rsu-a/cam0/L1", "horizon": 15}).json()
    assert one[0]["horizons"] == [
        {"minutes": 15, "flow_veh_h": forecasts["rsu-a/cam0/L1"].flows_veh_h[2]}
    ]
    assert api.get("/forecasts", params={"detector": "nobody/cam0/x"}).status_code == 404
    assert api.get("/forecasts", params={"horizon": 7}).status_code == 400
    api.put("/intersections/x", json={"id": "x", "approaches": [
        {"name": "south", "lanes": [{"rsu_id": "rsu-a", "lane_id": "L1"},
                                    {"rsu_id": "rsu-a", "lane_id": "L2"}]}]})  # fmt: skip
    south = api.get("/intersections/x/forecast").json()["approaches"][0]
    expected = forecasts["rsu-a/cam0/L1"].flows_veh_h[0] + forecasts["rsu-a/cam0/L2"].flows_veh_h[0]
    assert south["horizons"][0]["flow_veh_h"] == pytest.approx(expected, abs=0.11)
    assert south["fallback_lanes"] == 0


def test_without_a_model_every_lane_gets_a_fallback(tmp_path: Path, redis_client) -> None:
    store = open_history(f"sqlite:///{tmp_path}/h.db")
    write_history(store, days=2)
    forecasts = ForecastService(store, redis_client).run_once(T0 + 2 * DAY_MS + 1)
    assert {f.method for f in forecasts} == {"historical_average"}
    assert {f.reason for f in forecasts} == {"no trained model"}
    # The historical average of a repeating day is that day's value at the same time.
    level = 300 * (1 + 0.6 * np.sin(1 / 288 * 2 * np.pi))
    l1 = next(f for f in forecasts if f.detector == "rsu-a/cam0/L1")
    assert l1.flows_veh_h[0] == pytest.approx(round(level * 300 / 3600) * 12, abs=0.1)


def small_export(tmp_path: Path):
    """Two days of history, a one-epoch forecaster of 8 units, exported to m.onnx."""
    pytest.importorskip("torch", reason="exporting a model needs PyTorch (make install adds it)")
    from citybrain.forecast.commands import export_onnx
    from citybrain.forecast.model import TrainConfig, train
    from citybrain.forecast.protocol import chronological_split

    store = open_history(f"sqlite:///{tmp_path}/h.db")
    write_history(store, days=2)
    series = load_history(store, 300, T0, T0 + 2 * DAY_MS)
    config = TrainConfig(hidden=8, epochs=1, max_train_windows=20, members=1)
    trained = train("forecaster", series, chronological_split(len(series.values)), config,
                    progress=False)  # fmt: skip
    return series, trained, export_onnx(trained, tmp_path / "m.onnx", series.ids, 300)


def test_serving_precisions_are_checked_and_old_exports_serve_fp32(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from citybrain.forecast.online import quantized_path

    series, _, onnx = small_export(tmp_path)
    assert quantized_path(onnx) == tmp_path / "m-int8.onnx" and quantized_path(onnx).exists()
    with pytest.raises(ValueError, match="bf16 needs runtime openvino"):
        OnlineModel.load(onnx, "onnxruntime", "bf16")
    with pytest.raises(ValueError, match="with openvino use bf16 or fp32"):
        OnlineModel.load(onnx, "openvino", "int8")
    with pytest.raises(ValueError, match="unknown forecast precision 'fp16'"):
        OnlineModel.load(onnx, precision="fp16")
    # A model exported before int8 serving: by default fp32, said in the log; asked for
    # int8, an error naming the missing file.
    quantized_path(onnx).unlink()
    with caplog.at_level(logging.WARNING, logger="citybrain.forecast.online"):
        old = OnlineModel.load(onnx)
    assert "no int8 model beside it" in caplog.text
    recent = SeriesSet(series.values[-12:], int(series.times_ms[-12]), 300, series.ids)
    assert np.array_equal(
        old.predict(recent), OnlineModel.load(onnx, precision="fp32").predict(recent)
    )
    with pytest.raises(FileNotFoundError, match=r"m-int8\.onnx not found"):
        OnlineModel.load(onnx, precision="int8")


def test_the_fallback_keeps_weekends_apart_on_the_local_clock(tmp_path: Path, redis_client) -> None:
    """Without a model, a Saturday is forecast from Saturdays and Sundays at that time of
    day: in Beijing (UTC+8) traffic that is 120 veh/h at weekends and 600 on weekdays."""
    from citybrain.forecast.profile import day_kind

    offset_s = 8 * 3600
    store = open_history(f"sqlite:///{tmp_path}/h.db")
    rows = []
    for k in range(9 * 288):  # T0 is a Thursday, 08:00 in Beijing
        at = T0 + k * 300_000
        weekend = bool(day_kind(np.array([at + offset_s * 1000]))[0])
        vehicles = 10 if weekend else 50  # per 5 minutes: 120 and 600 veh/h
        rows.append(LaneRow("rsu-a", "cam0", "r", k, "L1", "south", at, 300.0,
                            {"car": vehicles}, 8.0, 0.2, 1, 5.0))  # fmt: skip
    store.write(rows)
    saturday = T0 + 9 * DAY_MS - offset_s * 1000 + 1  # Saturday 00:00 in Beijing
    local = ForecastService(store, redis_client, utc_offset_s=offset_s).run_once(saturday)
    assert local[0].method == "historical_average"
    assert local[0].flows_veh_h == [120.0] * 12
    # On UTC's clock it is Friday 16:00: weekday hours, of which the history's local
    # Saturdays' first hours are part.
    utc = ForecastService(store, redis_client).run_once(saturday)
    assert utc[0].flows_veh_h != [120.0] * 12


def test_profiles_travel_in_a_binary_file_and_older_exports_still_load(tmp_path: Path) -> None:
    import orjson

    series, trained, onnx = small_export(tmp_path)
    meta = orjson.loads((tmp_path / "m.json").read_bytes())
    assert meta["profiles"]["arrays"] == "m-profiles.npz" and "sums" not in meta["profiles"]
    model = OnlineModel.load(onnx, precision="fp32")
    assert trained.profiles is not None and model.profiles is not None
    assert np.array_equal(model.profiles.sums, trained.profiles.sums)
    assert np.array_equal(model.profiles.counts, trained.profiles.counts)
    recent = SeriesSet(series.values[-12:], int(series.times_ms[-12]), 300, series.ids)
    # An export from before: the arrays inside the JSON.
    meta["profiles"] = trained.profiles.state()
    (tmp_path / "m.json").write_bytes(orjson.dumps(meta))
    (tmp_path / "m-profiles.npz").unlink()
    older = OnlineModel.load(onnx, precision="fp32")
    assert np.array_equal(older.predict(recent), model.predict(recent))
