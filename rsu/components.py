"""An RSU's parts built from its config: one place for the live RSU and for replays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.datadir import resolve_asset
from rsu.config import RsuConfig
from rsu.detector import Detector, build_detector
from rsu.publish_thread import BackgroundPublisher
from rsu.publisher import BusPublisher
from rsu.spool import Spool, default_spool_path
from rsu.tiling import TiledDetector
from rsu.tracker import ByteTracker


def detector_for(config: RsuConfig, frame_size: tuple[int, int] | None = None) -> Detector:
    """The configured runtime; with tracking on, it also decodes the tracker's low band.
    With ``detector.tiles``, wrapped in tiled inference.  ``frame_size`` (width, height of
    the camera's frames, when known): the model runs at their aspect (``fit_to_frame``)."""
    model = resolve_asset(config.detector.model, config.data_dir)
    floor = config.tracker.low_threshold if config.tracker.enabled else None
    detector = build_detector(config.detector, model, score_floor=floor, frame_size=frame_size)
    if config.detector.tiles:
        cols, rows = (int(n) for n in config.detector.tiles.split("x"))
        return TiledDetector(detector, cols, rows, config.detector.tile_overlap)  # type: ignore[return-value]
    return detector


def spool_path_for(config: RsuConfig) -> Path:
    path = config.spool.path or default_spool_path(config.rsu_id, config.camera_id)
    return Path(path).expanduser()


def publisher_for(
    config: RsuConfig, on_ack: Callable[[float], None] | None = None
) -> BackgroundPublisher:
    """The bus publisher, in its own thread, spooling to disk while the bus is down.
    ``on_ack`` sees each tick's hand-over -> acknowledged seconds."""
    return BackgroundPublisher(
        BusPublisher(
            config.bus,
            Spool(spool_path_for(config), config.spool.max_messages),
            retry_initial_s=config.spool.retry_initial_s,
            retry_max_s=config.spool.retry_max_s,
        ),
        on_ack=on_ack,
    )


def tracker_for(config: RsuConfig, fps: float) -> ByteTracker | None:
    return ByteTracker(config.tracker, fps=fps) if config.tracker.enabled else None
