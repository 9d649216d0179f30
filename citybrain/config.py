"""citybrain configuration (YAML, strict)."""

from __future__ import annotations

import os
import socket

from pydantic import Field, field_validator, model_validator

from common.bus import BusConfig
from common.config import StrictModel, load_config


class IngestConfig(StrictModel):
    group: str = Field("citybrain", description="consumer group shared by all ingest workers")
    consumer: str | None = Field(
        None, description="consumer name; default hostname-pid. Reuse it to resume pending work"
    )
    batch: int = Field(
        1024,
        ge=1,
        le=10_000,
        description="most entries one read takes (all streams together); a worker behind "
        "catches up faster with more, and a read returns what is there without waiting for more",
    )
    block_ms: int = Field(1000, ge=0, description="how long a read waits for new entries")
    claim_idle_ms: int = Field(
        30_000, ge=100, description="take over entries another worker left pending this long"
    )
    claim_interval_s: float = Field(5.0, gt=0, description="how often to look for such entries")
    max_message_bytes: int = Field(
        1 << 20, ge=1024, description="larger messages are dead-lettered, not parsed"
    )
    lag_alert_s: float = Field(
        30.0, gt=0, description="/health is degraded once the oldest unread entry is this old"
    )

    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"


class StateConfig(StrictModel):
    bin_s: int = Field(10, ge=1, le=3600, description="base time bin of counts, seconds")
    counts_retention_s: int = Field(
        86_400, ge=60, description="how long binned counts stay in Redis"
    )
    dedup_ttl_s: int = Field(
        86_400, ge=60, description="how long a message id is remembered for de-duplication"
    )
    stale_after_s: float = Field(
        10.0,
        gt=0,
        description="an RSU silent this long is reported stale; a state kept this long "
        "gives way to any newer message, even one stamped earlier (a clock set back)",
    )
    clock_ahead_alert_s: float = Field(
        2.0,
        gt=0,
        description="/health names cameras whose messages are stamped this far after they "
        "reached the bus: their clock runs ahead, and their counts land in future bins",
    )
    clock_behind_alert_s: float = Field(
        120.0,
        gt=0,
        description="/health names cameras whose every message reaches the bus this long "
        "after it was sent: a clock behind, or a long outage's spool being re-sent",
    )

    @field_validator("bin_s")
    @classmethod
    def _bin_divides_hour(cls, value: int) -> int:
        if 3600 % value:
            raise ValueError(f"bin_s must divide 3600 so bins never straddle an hour, got {value}")
        return value


def _default_history_url() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return f"sqlite:///{state}/v2x-citybrain/history.db"


class HistoryConfig(StrictModel):
    enabled: bool = Field(True, description="keep per-lane history (1- and 5-minute bins)")
    url: str = Field(
        default_factory=_default_history_url,
        description="sqlite:///FILE (embedded, one ingest worker) or postgresql://USER:PW@HOST/"
        "DB (any number of workers); $HISTORY_URL overrides it",
    )
    raw_retention_s: int = Field(
        7 * 86_400,
        ge=86_400,
        description="how long raw 10 s lane intervals are kept (their identity is what makes "
        "a redelivery a no-op); bins are kept until deleted",
    )


class ApiConfig(StrictModel):
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8080, ge=0, le=65535, description="listen port")
    max_bins: int = Field(10_000, ge=1, description="most bins one counts query may return")
    auth: bool = Field(
        True,
        description="require API keys (roles viewer, operator, admin). Off only for a local "
        "demo: anyone who reaches the port can then change the registry",
    )
    live_window_s: int = Field(
        300, ge=10, le=3600, description="live flow and counts cover this many seconds"
    )
    health_cache_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="reuse the /health and /metrics report this long: it reads every RSU "
        "stream's group info",
    )


class SignalRulesConfig(StrictModel):
    """Timing rules every signal plan and phase change obeys (the safety envelope)."""

    min_green_s: float = Field(5.0, ge=1, le=120, description="shortest green of any phase")
    max_green_s: float = Field(
        60.0, ge=5, le=300, description="longest green while another phase has demand"
    )
    yellow_s: float = Field(3.0, ge=2, le=8, description="yellow after every green")
    all_red_s: float = Field(
        1.0, ge=0, le=6, description="red for all conflicting movements after a yellow"
    )
    ped_walk_s: float = Field(7.0, ge=0, le=60, description="pedestrian walk interval")
    ped_speed_mps: float = Field(
        1.2, gt=0, le=3, description="walking speed for crossing clearance (MUTCD: 1.07-1.2)"
    )
    max_cycle_s: float = Field(150.0, ge=30, le=300, description="longest fixed-time cycle")
    max_clearance_hold_s: float = Field(
        6.0,
        ge=0,
        le=30,
        description="all-red is held this much longer at most while road users on "
        "conflicting links are still in the junction box",
    )

    @model_validator(mode="after")
    def _order(self) -> SignalRulesConfig:
        if self.max_green_s < self.min_green_s:
            raise ValueError(
                f"max_green_s ({self.max_green_s}) is below min_green_s ({self.min_green_s})"
            )
        return self

    def rules(self):  # -> SafetyRules
        from citybrain.signals.safety import SafetyRules

        return SafetyRules(**self.model_dump())


class ArteryConfig(StrictModel):
    """Intersections coordinated for a green wave, in the direction of travel."""

    intersections: list[str] = Field(min_length=2, max_length=50)
    distances_m: list[float] = Field(description="between consecutive intersections")
    speed_kmh: float = Field(50.0, gt=5, le=130, description="progression speed")
    main_phases: list[int] = Field(description="the green phase carrying the artery, each")

    @model_validator(mode="after")
    def _lengths(self) -> ArteryConfig:
        n = len(self.intersections)
        if len(self.distances_m) != n - 1 or len(self.main_phases) != n:
            raise ValueError(f"{n} intersections need {n - 1} distances_m and {n} main_phases")
        if any(d <= 0 for d in self.distances_m):
            raise ValueError("distances_m must be positive")
        return self


class SignalsConfig(StrictModel):
    """Signal planning: rules, the adaptive planner's settings and its data checks."""

    rules: SignalRulesConfig = Field(default_factory=SignalRulesConfig)
    sensing_range_m: float = Field(
        120.0, ge=20, le=500, description="approach length a camera sees, metres"
    )
    stale_after_s: float = Field(
        5.0, gt=0, le=300, description="older observations switch to the safe fixed plan"
    )
    recover_after: int = Field(
        3, ge=1, le=100, description="good observations in a row before leaving the fallback"
    )
    replan_s: float = Field(
        900.0, ge=60, le=86_400, description="how often the fallback plan is re-optimised"
    )
    gap_s: float = Field(
        4.0, gt=0, le=15, description="extend a green while someone arrives within this"
    )
    wait_weight_per_s: float = Field(
        0.2, ge=0, le=10, description="phase choice: weight of the longest wait per second"
    )
    max_red_s: float = Field(
        180.0, ge=10, le=600, description="a phase with demand waits no longer than this"
    )
    share_memory_s: float = Field(
        900.0, ge=60, le=86_400, description="turning counts are remembered this long"
    )
    permitted_weight: float = Field(
        1.0, ge=0, le=1, description="demand weight of a permitted (yielding) movement"
    )
    overflow_share: float = Field(
        0.8,
        gt=0,
        le=2,
        description="a queue filling this share of the camera's view may run out of sight",
    )
    overflow_factor: float = Field(3.0, ge=1, le=10, description="demand weight of such a queue")
    patience_s: float = Field(
        60.0,
        ge=0,
        le=600,
        description="a flowing green is cut once someone elsewhere has waited this long "
        "(0: only max_green_s cuts it)",
    )
    blocked_within_m: float = Field(
        10.0,
        ge=0,
        le=100,
        description="an exit with a stopped road user this close to the junction is full: "
        "movements into it do not count as demand (0: off)",
    )
    plan_horizon_min: int = Field(
        15, ge=5, le=120, description="fixed-time plans are sized for this much forecast"
    )
    plan_interval_s: float = Field(
        900.0, ge=60, le=86_400, description="how often `citybrain signals plan` re-plans"
    )
    auto_approve: bool = Field(
        False, description="planner's plans take effect without an operator (audited)"
    )
    arteries: list[ArteryConfig] = Field(
        default_factory=list, description="green waves: coordinated intersections"
    )
    exit_weight: float = Field(
        0.0, ge=0, le=10, description="phase choice: weight against road users stopped on exits"
    )


class RoutingConfig(StrictModel):
    """The road graph and how its travel times are kept."""

    graph: str | None = Field(
        None, description="road network: a SUMO .net.xml or a GeoJSON of road segments"
    )
    landmarks: int = Field(16, ge=1, le=64, description="ALT landmarks")
    refresh_s: float = Field(
        300.0, ge=10, le=86_400, description="travel times are re-estimated this often"
    )
    bins: int = Field(12, ge=1, le=288, description="forecast bins of travel time ahead")
    edge_lanes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="edge id -> the RSU lanes (rsu/camera/lane) that watch it",
    )


class CitybrainConfig(StrictModel):
    bus: BusConfig = Field(default_factory=BusConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)


def load_citybrain_config(path: str | None, redis_url: str | None = None) -> CitybrainConfig:
    """Config file (optional), then ``redis_url`` or $REDIS_URL over it."""
    url = redis_url or os.environ.get("REDIS_URL")
    overrides: dict[str, dict[str, str]] = {"bus": {"redis_url": url}} if url else {}
    if os.environ.get("HISTORY_URL"):
        overrides["history"] = {"url": os.environ["HISTORY_URL"]}
    if path:
        return load_config(CitybrainConfig, path, overrides)
    return CitybrainConfig.model_validate(overrides)
