"""``rsu run``: one live camera, processed until stopped.

The RSU starts even when the bus is down (messages spool) and keeps running when the camera
disappears: it keeps sending health messages that say so, with the reason, while the source
reconnects.  SIGTERM/SIGINT stop it cleanly: last aggregates, a final health message, and
the spool flushed if the bus is up.
"""

from __future__ import annotations

import logging
import threading
import time

from common.config import ConfigError
from common.gc_policy import collect_due
from rsu.components import detector_for, publisher_for, tracker_for
from rsu.config import RsuConfig
from rsu.metrics import RsuMetrics
from rsu.pipeline import RsuPipeline
from rsu.publish_thread import AnyPublisher, BackgroundPublisher, favour_camera_loop
from rsu.replay import load_scene
from rsu.source import LiveSource

log = logging.getLogger("rsu.live")
NOMINAL_FPS = 25.0  # until the camera says otherwise: sizes the tracker's lost buffer


@favour_camera_loop()
def run_live(config: RsuConfig, stop: threading.Event) -> RsuPipeline:
    if config.source is None:
        raise ConfigError("rsu run needs a `source` in the config (the camera to read)")
    scene = load_scene(config.scene) if config.scene else None
    # The scene is drawn on the camera's frames (``rsu check`` compares the sizes).
    frame_size = (scene.image_size[0], scene.image_size[1]) if scene and scene.image_size else None
    detector = detector_for(config, frame_size)
    metrics = RsuMetrics()
    publisher = publisher_for(config, on_ack=metrics.bus_ack.observe)
    log.info("model %s warmed up in %.0f ms", config.detector.model, detector.warmup())
    port = metrics.serve(config.metrics)
    if port is not None:
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, port)
    source = LiveSource(config.source)
    rate = config.max_fps or NOMINAL_FPS
    tracker = tracker_for(config, rate)
    pipeline = RsuPipeline(config, detector, publisher, scene, tracker=tracker, source=source)
    min_gap = 1.0 / config.max_fps if config.max_fps else 0.0
    last_processed = 0.0
    next_idle_health = 0.0
    try:
        while not stop.is_set():
            frame = source.read(timeout_s=min(1.0, config.health_interval_s))
            now = time.monotonic()
            _update_gauges(metrics, pipeline, source, publisher)
            if frame is None:
                if now >= next_idle_health:  # no frames: still say so, and why
                    next_idle_health = now + config.health_interval_s
                    publisher.send([pipeline.health(status="ok")])
                publisher.drain()
                collect_due()  # the pipeline does after each frame; with no frames, here
                continue
            if now - last_processed < min_gap:
                continue  # over max_fps: this frame is dropped, a newer one will come
            last_processed = now
            message = pipeline.process(frame, frame.captured_at_ms, frame.decode_ms)
            total = pipeline.timer.total[-1]
            age = message.published_at_ms - frame.captured_at_ms
            metrics.observe_frame(pipeline.timer.last, total, age, total > config.budget_ms)
        pipeline.finish(detail="stopped", frame_ms=1000.0 / rate)
        publisher.flush(timeout_s=5.0)
    finally:
        source.close()
        publisher.close()
    return pipeline


def _update_gauges(
    metrics: RsuMetrics, pipeline: RsuPipeline, source: LiveSource, publisher: AnyPublisher
) -> None:
    metrics.fps.set(pipeline.fps())
    metrics.skipped.set(source.frames_skipped)
    metrics.corrupt.set(source.corrupt_reads)
    metrics.source_up.set(1 if source.connected else 0)
    metrics.source_reconnects.set(source.reconnects)
    metrics.bus_up.set(1 if publisher.connected else 0)
    metrics.bus_reconnects.set(publisher.reconnects)
    metrics.spool.set(publisher.spool_depth)
    if isinstance(publisher, BackgroundPublisher):
        metrics.bus_queued.set(publisher.queued)
        metrics.bus_queue_waits.set(publisher.queue_waits)
