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
    batch: int = Field(256, ge=1, le=10_000, description="entries read per XREADGROUP")
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
        10.0, gt=0, description="an RSU silent this long is reported stale"
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
        120.0, ge=10, le=600, description="a phase with demand waits no longer than this"
    )
    yield_ratio: float = Field(
        0.0,
        ge=0,
        le=10,
        description="cut a flowing green when another phase has 1/this times its road users",
    )
    count_all: bool = Field(False, description="experimental")
    congested_share: float = Field(0.0, ge=0, le=1, description="experimental")
    exit_weight: float = Field(
        0.0, ge=0, le=10, description="phase choice: weight against road users stopped on exits"
    )


class CitybrainConfig(StrictModel):
    bus: BusConfig = Field(default_factory=BusConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)


def load_citybrain_config(path: str | None, redis_url: str | None = None) -> CitybrainConfig:
    """Config file (optional), then ``redis_url`` or $REDIS_URL over it."""
    url = redis_url or os.environ.get("REDIS_URL")
    overrides: dict[str, dict[str, str]] = {"bus": {"redis_url": url}} if url else {}
    if os.environ.get("HISTORY_URL"):
        overrides["history"] = {"url": os.environ["HISTORY_URL"]}
    if path:
        return load_config(CitybrainConfig, path, overrides)
    return CitybrainConfig.model_validate(overrides)
