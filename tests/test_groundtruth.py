"""Ground-truth loaders on hand-made files, and one MOT run through `rsu eval` on video."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from common.datadir import resolve_asset
from rsu.groundtruth import GroundTruthError, load_detrac, load_mot

ROOT = Path(__file__).resolve().parent.parent


def test_mot_rows_classes_and_ignore_regions(tmp_path: Path) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text(
        "1, 1, 10, 20, 30, 40, 1, 3, 1.0\n"  # car
        "1, 2, 100, 100, 20, 50, 1, 1, 0.8\n"  # pedestrian
        "1, 3, 200, 200, 30, 30, 0, 3, 1.0\n"  # conf 0: ignore region
        "2, 1, 12, 20, 30, 40, 1, 3, 1.0\n"
        "2, 9, 300, 300, 10, 10, 1, 8, 1.0\n"  # distractor: ignore region
        "2, 7, 50, 50, 10, 10, 1, 13, 1.0\n"  # a class we do not know: dropped, counted
    )
    truth = load_mot(gt)
    assert [(i.id, i.frame_index, i.file_name) for i in truth.images] == [
        (1, 0, "000001.jpg"), (2, 1, "000002.jpg"),
    ]  # fmt: skip
    first = truth.boxes[1]
    assert [(b.xyxy, b.category, b.crowd) for b in first] == [
        ((10.0, 20.0, 40.0, 60.0), "car", False),
        ((100.0, 100.0, 120.0, 150.0), "person", False),
        ((200.0, 200.0, 230.0, 230.0), "car", True),
    ]
    assert [b.crowd for b in truth.boxes[2]] == [False, True]
    assert truth.dropped == {"mot class 13": 1}
    assert truth.counts() == {"car": 2, "person": 1}


def test_mot_without_a_class_column_and_a_broken_row(tmp_path: Path) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text("5,1,0,0,10,10\n")
    assert load_mot(gt, default_class="bus").boxes[5][0].category == "bus"
    gt.write_text("5,1,0,0,10,10\n6,oops\n")
    with pytest.raises(GroundTruthError, match=r"gt.txt:2: not a MOT row"):
        load_mot(gt)


def test_detrac_types_and_ignored_regions(tmp_path: Path) -> None:
    xml = tmp_path / "MVI_1.xml"
    xml.write_text(
        """<sequence name="MVI_1">
  <ignored_region><box left="0" top="0" width="50" height="20"/></ignored_region>
  <frame density="3" num="1"><target_list>
    <target id="1"><box left="100" top="100" width="40" height="30"/>
      <attribute vehicle_type="car"/></target>
    <target id="2"><box left="200" top="100" width="40" height="30"/>
      <attribute vehicle_type="van"/></target>
    <target id="3"><box left="300" top="100" width="80" height="40"/>
      <attribute vehicle_type="others"/></target>
  </target_list></frame>
  <frame density="1" num="2"><target_list>
    <target id="4"><box left="10" top="200" width="90" height="50"/>
      <attribute vehicle_type="bus"/></target>
    <target id="5"><box left="1" top="2" width="3" height="4"/></target>
  </target_list></frame>
</sequence>"""
    )
    truth = load_detrac(xml)
    assert [(i.id, i.file_name, i.frame_index) for i in truth.images] == [
        (1, "img00001.jpg", 0), (2, "img00002.jpg", 1),
    ]  # fmt: skip
    kinds = [(b.category, b.crowd) for b in truth.boxes[1]]
    assert kinds == [("car", True), ("car", False), ("car", False), ("truck", False)]
    assert [(b.category, b.crowd) for b in truth.boxes[2]] == [("car", True), ("bus", False)]
    assert truth.dropped == {"untyped": 1}
    (tmp_path / "bad.xml").write_text("<sequence></sequence>")
    with pytest.raises(GroundTruthError, match="no <frame> elements"):
        load_detrac(tmp_path / "bad.xml")


def test_mot_ground_truth_through_rsu_eval_on_the_real_clip(tmp_path: Path) -> None:
    from tests.test_replay_to_api import HAND_BOXED_CARS

    gt = tmp_path / "gt.txt"
    gt.write_text(
        "".join(
            f"1,{k},{x1},{y1},{x2 - x1},{y2 - y1},1,3,1\n"
            for k, (x1, y1, x2, y2) in enumerate(HAND_BOXED_CARS.values(), start=1)
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "rsu.cli", "eval", "--format", "mot", "--gt", str(gt),
         "--images", str(resolve_asset("video/intersection_beijing/intersection.mp4")),
         "--classes", "vehicle", "--model", "models/yolov8n-coco-640.onnx", "--json"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    figures = orjson.loads(out.stdout.strip().splitlines()[-1])
    vehicle = figures["classes"]["vehicle"]
    assert figures["images"] == 1 and vehicle["gt"] == 5
    assert vehicle["recall"] == 1.0  # all five hand-boxed cars found (frame 1 = video frame 0)
