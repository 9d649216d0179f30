"""Prometheus metrics of one RSU camera pipeline, served over HTTP for scraping."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import Field

from common.config import StrictModel

_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)


class MetricsConfig(StrictModel):
    port: int | None = Field(9108, ge=0, le=65535, description="metrics port; null: no metrics")
    host: str = Field(
        "127.0.0.1", description="listen address; 0.0.0.0 lets a remote Prometheus scrape"
    )


class RsuMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram(
            "rsu_stage_latency_seconds", "per-frame time of each pipeline stage", ["stage"],
            buckets=_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.frame = Histogram(
            "rsu_frame_latency_seconds", "decoded frame to message published",
            buckets=_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.frame_age = Histogram(
            "rsu_frame_age_seconds", "camera capture to message published (includes waiting)",
            buckets=_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.frames = Counter("rsu_frames_processed", "frames processed", registry=r)
        self.over_budget = Counter(
            "rsu_budget_violations", "frames over the latency budget", registry=r
        )
        self.skipped = Gauge("rsu_frames_skipped", "frames dropped by the live source", registry=r)
        self.corrupt = Gauge("rsu_corrupt_reads", "failed or corrupt frame reads", registry=r)
        self.fps = Gauge("rsu_fps", "frames processed per second, recent", registry=r)
        self.source_up = Gauge("rsu_source_connected", "1 while the camera delivers", registry=r)
        self.source_reconnects = Gauge("rsu_source_reconnects", "camera reconnections", registry=r)
        self.bus_up = Gauge("rsu_bus_connected", "1 while the bus is reachable", registry=r)
        self.bus_reconnects = Gauge("rsu_bus_reconnects", "bus reconnections", registry=r)
        self.spool = Gauge("rsu_spool_depth", "messages waiting for the bus", registry=r)
        self.bus_ack = Histogram(
            "rsu_bus_ack_seconds",
            "a tick's messages handed to the sender thread until the bus acknowledged them "
            "(or the spool took them)",
            buckets=_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.bus_queued = Gauge(
            "rsu_bus_queued", "ticks handed to the sender thread, not yet sent", registry=r
        )
        self.bus_queue_waits = Gauge(
            "rsu_bus_queue_waits", "ticks that waited because the sender's queue was full",
            registry=r,
        )  # fmt: skip

    def serve(self, config: MetricsConfig) -> int | None:
        """Start the HTTP endpoint; returns the port it listens on."""
        if config.port is None:
            return None
        server, _ = start_http_server(config.port, addr=config.host, registry=self.registry)
        return int(server.server_port)

    def observe_frame(
        self, stages: dict[str, float], total_ms: float, age_ms: float, over_budget: bool
    ) -> None:
        for name, ms in stages.items():
            self.stage.labels(name).observe(ms / 1000.0)
        self.frame.observe(total_ms / 1000.0)
        self.frame_age.observe(max(age_ms, 0.0) / 1000.0)
        self.frames.inc()
        if over_budget:
            self.over_budget.inc()
