from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.config import CitybrainConfig, load_citybrain_config
from common.config import ConfigError, load_config
from rsu.replay import load_scene
from rsu.scene import GroundProjector, LaneMap, SceneConfig, SceneError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_unknown_field_names_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  partitons: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(CitybrainConfig, path)
    assert "bus.partitons: unknown field" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_names_path_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest:\n  batch: lots\n")
    with pytest.raises(ConfigError, match=r"ingest\.batch: Input should be a valid integer"):
        load_config(CitybrainConfig, path)


def test_infinity_and_nan_are_rejected_naming_the_field(tmp_path: Path) -> None:
    from rsu.config import RsuConfig

    for value in (".inf", ".nan"):
        path = write(tmp_path, f"rsu_id: r1\nbudget_ms: {value}\n")
        with pytest.raises(ConfigError, match=r"budget_ms: Input should be a finite number"):
            load_config(RsuConfig, path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  partitions: [1, 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML .* at line"):
        load_config(CitybrainConfig, path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(CitybrainConfig, tmp_path / "nope.yaml")


def test_bin_must_divide_an_hour() -> None:
    with pytest.raises(Exception, match="bin_s must divide 3600"):
        CitybrainConfig.model_validate({"state": {"bin_s": 7}})


def test_redis_url_override(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  redis_url: redis://example:1/0\n")
    config = load_citybrain_config(str(path), "redis://127.0.0.1:9/0")
    assert config.bus.redis_url == "redis://127.0.0.1:9/0"


def test_config_objects_are_frozen() -> None:
    config = CitybrainConfig()
    with pytest.raises(Exception, match="frozen"):
        config.api.port = 1  # type: ignore[misc]


def test_self_intersecting_lane_is_rejected(tmp_path: Path) -> None:
    bowtie = "[[0, 0], [10, 10], [10, 0], [0, 10]]"
    path = write(tmp_path, f"name: s\nlanes:\n  - id: L1\n    polygon: {bowtie}\n")
    with pytest.raises(ConfigError, match=r"lanes\.0\.polygon: .*not a simple polygon"):
        load_config(SceneConfig, path)


def test_duplicate_lane_ids_are_rejected(tmp_path: Path) -> None:
    square = "[[0, 0], [10, 0], [10, 10], [0, 10]]"
    lane = f"  - id: L1\n    polygon: {square}\n"
    with pytest.raises(ConfigError, match="duplicate lane ids"):
        load_config(SceneConfig, write(tmp_path, "name: s\nlanes:\n" + lane + lane))


def test_degenerate_calibration_is_rejected() -> None:
    scene = SceneConfig.model_validate(
        {
            "name": "s",
            "calibration": {
                "image_points": [[0, 0], [1, 1], [2, 2], [3, 3]],
                "ground_points": [[0, 0], [1, 1], [2, 2], [3, 3]],
            },
        }
    )
    with pytest.raises(SceneError, match="degenerate"):
        GroundProjector(scene.calibration)  # type: ignore[arg-type]


def test_homography_maps_reference_points() -> None:
    scene = SceneConfig.model_validate(
        {
            "name": "s",
            "calibration": {
                "image_points": [[100, 400], [500, 400], [450, 100], [150, 100]],
                "ground_points": [[0, 0], [7, 0], [7, 30], [0, 30]],
            },
        }
    )
    projector = GroundProjector(scene.calibration)  # type: ignore[arg-type]
    import numpy as np

    mapped = projector.to_ground(np.array([[100.0, 400.0], [450.0, 100.0]]))
    assert np.allclose(mapped, [[0, 0], [7, 30]], atol=1e-6)


def test_lane_assignment_first_listed_wins_on_overlap() -> None:
    import numpy as np

    scene = SceneConfig.model_validate(
        {
            "name": "s",
            "lanes": [
                {"id": "B", "polygon": [[0, 0], [10, 0], [10, 10], [0, 10]]},
                {"id": "A", "polygon": [[5, 0], [20, 0], [20, 10], [5, 10]]},
            ],
        }
    )
    lanes = LaneMap(scene.lanes)
    points = np.array([[2.0, 5.0], [7.0, 5.0], [15.0, 5.0], [50.0, 50.0]])
    assert lanes.assign(points) == ["B", "B", "A", None]


def test_shipped_scenes_load() -> None:
    scenes = sorted((ROOT / "replay_data").glob("*.yaml"))
    assert scenes
    for path in scenes:
        scene = load_scene(path)
        assert scene.video, f"{path} names no clip"


def test_the_jetson_example_config_is_valid() -> None:
    from rsu.config import RsuConfig

    config = load_config(RsuConfig, ROOT / "deploy/jetson/rsu.example.yaml")
    assert config.source is not None and config.source.uri.startswith("gst:")
    assert config.detector.providers == ["tensorrt", "cuda", "cpu"]


def test_georeferenced_ground_points_map_to_lat_lon() -> None:
    import numpy as np

    scene = SceneConfig.model_validate(
        {
            "name": "s",
            "calibration": {
                "image_points": [[100, 400], [500, 400], [450, 100], [150, 100]],
                "ground_points": [[0, 0], [7, 0], [7, 30], [0, 30]],
                "origin": {"lat": 39.9042, "lon": 116.4074},
            },
        }
    )
    projector = GroundProjector(scene.calibration)  # type: ignore[arg-type]
    geo = projector.to_geo(np.array([[0.0, 0.0], [0.0, 111.195], [100.0, 0.0]]))
    assert np.allclose(geo[0], [39.9042, 116.4074])
    assert np.allclose(geo[1], [39.9052, 116.4074], atol=1e-6)  # 1/1000 deg north = 111.195 m
    # 100 m east at 39.9 deg north: 100 / (6371008.8 * cos(39.9042 deg)) rad
    assert abs(geo[2][1] - 116.4074 - 0.00117234) < 1e-7
