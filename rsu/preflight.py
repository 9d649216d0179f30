"""``rsu check``: an installer's checks before an RSU goes live, each with a verdict.

- **scene**: the scene file loads (calibration invertible, lanes and lines valid).
- **model**: the model loads in the configured runtime; inference time against the budget.
- **camera**: the source opens and gives a frame, of the size the scene was drawn on (a
  calibration is made for one resolution: at another, every ground position is wrong).
- **bus**: the bus answers, and takes a health message on this RSU's stream, as it will
  every second (with this RSU's credentials, that is the write its ACL allows).
- **clock**: the RSU's clock against the bus server's.  Counts are binned by the RSU's
  clock, so one that is off puts them in the wrong bins.

Each check says what is wrong and what to do.  A check that cannot run because an earlier
one failed says so.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from rsu.config import RsuConfig

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
CLOCK_TOLERANCE_MS = 1000.0
CAMERA_WAIT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str  # ok, warn, fail, skipped
    detail: str


def run_checks(config: RsuConfig, camera_wait_s: float = CAMERA_WAIT_S) -> list[Check]:
    checks: list[Check] = []
    scene = _scene(config, checks)
    detector = _model(config, scene, checks)
    _camera(config, scene, detector, checks, camera_wait_s)
    client = _bus(config, checks)
    _clock(client, checks)
    return checks


def _scene(config: RsuConfig, checks: list[Check]) -> Any:
    from rsu.replay import load_scene
    from rsu.scene import GroundProjector, SceneError

    if not config.scene:
        checks.append(Check("scene", WARN, "no scene: no lanes, positions, speeds or counts"))
        return None
    try:
        scene = load_scene(config.scene)
        if scene.calibration is not None:
            GroundProjector(scene.calibration)  # the homography must invert
    except (SceneError, OSError, ValueError) as exc:
        checks.append(Check("scene", FAIL, str(exc)))
        return None
    size = f", drawn on {scene.image_size[0]}x{scene.image_size[1]}" if scene.image_size else ""
    calibrated = "calibrated" if scene.calibration is not None else "not calibrated"
    checks.append(
        Check(
            "scene",
            OK,
            f"{config.scene}: {len(scene.lanes)} lanes, {len(scene.lines)} "
            f"lines, {calibrated}{size}",
        )
    )
    return scene


def _model(config: RsuConfig, scene: Any, checks: list[Check]) -> Any:
    from common.datadir import AssetNotFoundError
    from rsu.components import detector_for
    from rsu.detector import ModelError

    try:
        size = scene.image_size if scene is not None else None
        detector = detector_for(config, (size[0], size[1]) if size else None)
        detector.warmup()
    except (AssetNotFoundError, ModelError, OSError) as exc:
        checks.append(Check("model", FAIL, str(exc)))
        return None
    height, width = detector.input_hw
    blank = np.zeros((height, width, 3), np.uint8)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        detector.detect(blank)
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    text = (
        f"{config.detector.model} on {config.detector.runtime} at {width}x{height}: "
        f"{median:.1f} ms a frame (median of 5), budget {config.budget_ms:g} ms"
    )
    checks.append(
        _judged(
            "model", text, median <= config.budget_ms, WARN,
            "the RSU will skip frames to keep up "
            "(a smaller imgsz, bf16/int8 or a GPU runtime would not)",
        )
    )  # fmt: skip
    return detector


def _camera(
    config: RsuConfig, scene: Any, detector: Any, checks: list[Check], wait_s: float
) -> None:
    from rsu.source import LiveSource

    if config.source is None:
        checks.append(Check("camera", FAIL, "no `source` in the config: the camera to read"))
        return
    source = LiveSource(config.source)
    try:
        frame = source.read(timeout_s=wait_s)
    finally:
        source.close()
    if frame is None:
        why = source.last_error or f"no frame within {wait_s:g} s"
        checks.append(Check("camera", FAIL, f"{config.source.uri}: {why}"))
        return
    height, width = frame.image.shape[:2]
    text = f"{config.source.uri}: {width}x{height}"
    if scene is not None and scene.image_size and tuple(scene.image_size) != (width, height):
        drawn = f"{scene.image_size[0]}x{scene.image_size[1]}"
        checks.append(
            Check(
                "camera",
                FAIL,
                f"{text}, but the scene was drawn on {drawn}: its lanes and "
                "calibration do not fit this image; set the camera to that resolution, or "
                "draw the scene again on a frame of this one",
            )
        )
        return
    if detector is not None:
        found = detector.detect(frame.image)  # the tracker's low band included
        confident = int(detector.passes_confidence(found).sum())
        text += f"; {confident} road users in the first frame"
    checks.append(Check("camera", OK, text))


def _bus(config: RsuConfig, checks: list[Check]) -> redis.Redis | None:
    from common.bus import StreamProducer
    from common.schemas import RsuHealth, encode_message

    client = redis.Redis.from_url(config.bus.redis_url, socket_connect_timeout=3, socket_timeout=3)
    now = int(time.time() * 1000)
    health = RsuHealth(
        rsu_id=config.rsu_id,
        camera_id=config.camera_id,
        run_id=f"check-{now}",
        seq=0,
        sent_at_ms=now,
        status="ok",
        source_connected=True,
        fps=0.0,
        frames_processed=0,
        frames_skipped=0,
        budget_ms=config.budget_ms,
        budget_violations=0,
        detail="rsu check: installation check, not running yet",
    )
    try:
        StreamProducer(client, config.bus).publish([(config.rsu_id, encode_message(health))])
    except redis.AuthenticationError as exc:
        checks.append(Check("bus", FAIL, f"{_where(config)}: credentials refused ({exc})"))
        return None
    except redis.ResponseError as exc:
        # NOPERM: the ACL user may not write this stream (issued for another RSU id?)
        checks.append(
            Check(
                "bus",
                FAIL,
                f"{_where(config)}: {exc}; are these the credentials issued for {config.rsu_id!r}?",
            )
        )
        return None
    except redis.RedisError as exc:
        checks.append(
            Check(
                "bus",
                FAIL,
                f"{_where(config)}: unreachable ({exc}); the RSU "
                "would spool to disk until it answers",
            )
        )
        return None
    checks.append(
        Check(
            "bus", OK, f"{_where(config)}: took a health message on the stream of {config.rsu_id!r}"
        )
    )
    return client


def _where(config: RsuConfig) -> str:
    """The bus URL without its password."""
    url = config.bus.redis_url
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _clock(client: redis.Redis | None, checks: list[Check]) -> None:
    if client is None:
        checks.append(Check("clock", SKIPPED, "needs the bus"))
        return
    try:
        before = time.time()
        seconds, micros = client.time()
        after = time.time()
    except redis.ResponseError as exc:
        checks.append(
            Check(
                "clock",
                SKIPPED,
                f"the bus user may not ask the time ({exc}); "
                "the center measures each camera's clock from its messages",
            )
        )
        return
    server = seconds + micros / 1e6
    ahead_ms = ((before + after) / 2 - server) * 1000
    trip_ms = (after - before) * 1000
    text = f"{ahead_ms:+.0f} ms against the bus server (round trip {trip_ms:.0f} ms)"
    checks.append(
        _judged(
            "clock", text, abs(ahead_ms) <= CLOCK_TOLERANCE_MS, FAIL,
            "counts would land in the wrong time bins; enable time sync "
            "(NTP, chrony or systemd-timesyncd)",
        )
    )  # fmt: skip


def _judged(name: str, measured: str, ok: bool, verdict: str, consequence: str) -> Check:
    """OK with what was measured, or ``verdict`` with what it means for the RSU."""
    return Check(name, OK, measured) if ok else Check(name, verdict, f"{measured}: {consequence}")


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"{c.verdict.upper():<8}{c.name:<8}{c.detail}" for c in checks)
