"""The traffic-center HTTP API (FastAPI).  Errors are RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import redis
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from citybrain.config import CitybrainConfig
from citybrain.state import TrafficState, now_ms
from common.bus import connect
from common.schemas import FrameObjects, LaneAggregates, LatencySummary

log = logging.getLogger("citybrain.api")
PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class HealthReport(BaseModel):
    status: str = Field(
        description="ok; degraded when ingest lags; down when Redis is unreachable. "
        "Silent cameras are counted in stale_cameras, not here"
    )
    redis: bool
    ingest_unread: int = Field(description="bus entries not yet read by ingest")
    ingest_pending: int = Field(description="entries read but not yet acknowledged")
    dead_letters: int = Field(description="invalid messages set aside in dead-letter streams")
    rsus: int
    stale_cameras: int
    problems: list[str] = Field(default_factory=list)


class CameraSummary(BaseModel):
    camera_id: str
    last_seen_ms: int
    last_seen: datetime
    status: str = Field(description="RSU-reported status (ok/degraded/down) or stale/unknown")
    stale: bool


class RsuSummary(BaseModel):
    rsu_id: str
    cameras: list[CameraSummary]


class RsuList(BaseModel):
    items: list[RsuSummary]
    total: int


class CameraState(BaseModel):
    camera_id: str
    status: str
    stale: bool
    source_connected: bool | None = None
    fps: float | None = Field(None, description="frames per second the RSU processes")
    latency: LatencySummary | None = Field(None, description="RSU decode->publish latency")
    budget_violations: int | None = None
    frames_processed: int | None = None
    spool_depth: int | None = Field(None, description="messages waiting on the RSU for the bus")
    frame: FrameObjects | None = Field(None, description="latest frame: its objects and timing")
    lanes: LaneAggregates | None = Field(
        None, description="latest interval per lane: counts, occupancy, queue, mean speed"
    )
    frame_age_ms: int | None = Field(None, description="now - capture time of that frame")
    publish_to_state_ms: int | None = Field(None, description="RSU publish -> stored here")
    detail: str | None = None


class RsuState(BaseModel):
    rsu_id: str
    cameras: list[CameraState]


class CountBinOut(BaseModel):
    start: datetime
    start_ms: int
    camera_id: str
    lane_id: str = Field(
        description="'*' is the whole camera, 'line:<id>' a counting line, else a scene lane id"
    )
    frames: int = Field(description="frames processed in the bin (camera rows only)")
    observations: dict[str, int] = Field(
        description="object-frames per class: the sum over frames of objects seen"
    )
    counts: dict[str, int] = Field(
        description="road users counted in the lane: tracks that crossed a line in it"
    )
    positive: dict[str, int] = Field(
        default_factory=dict, description="line rows: crossings left-to-right of p1->p2"
    )
    negative: dict[str, int] = Field(default_factory=dict, description="line rows: the reverse")


class CountsOut(BaseModel):
    rsu_id: str
    since: datetime
    until: datetime
    bin_s: int
    bins: list[CountBinOut]


def _ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _problem(request: Request, status: int, title: str, detail: str | None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, instance=str(request.url.path))
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_JSON)


def create_app(config: CitybrainConfig, client: redis.Redis | None = None) -> FastAPI:
    client = client or connect(config.bus.redis_url)
    state = TrafficState(client, config)
    stale_ms = int(config.state.stale_after_s * 1000)
    problem_responses: dict[int | str, dict[str, Any]] = {
        404: {"model": Problem, "content": {PROBLEM_JSON: {}}},
        422: {"model": Problem, "content": {PROBLEM_JSON: {}}},
    }
    app = FastAPI(
        title="citybrain traffic-center API",
        version="0.1.0",
        description="Live state and counts of roadside units (RSUs), ingested from Redis Streams.",
        responses=problem_responses,
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 400: "Bad Request", 503: "Service Unavailable"}.get(
            exc.status_code, "Error"
        )
        return _problem(request, exc.status_code, title, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        return _problem(request, 422, "Invalid request", detail)

    @app.exception_handler(redis.RedisError)
    async def _redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("Redis error serving %s: %s", request.url.path, exc)
        return _problem(request, 503, "Service Unavailable", "traffic state store unreachable")

    def camera_status(camera: dict[str, Any], last_seen: int, now: int) -> tuple[str, bool]:
        stale = now - last_seen > stale_ms
        health = camera.get("health")
        status = health["status"] if health else "unknown"
        if stale and status != "down":
            status = "stale"
        return status, stale

    @app.get("/health", response_model=HealthReport, tags=["service"])
    def health() -> HealthReport:
        try:
            client.ping()
        except redis.RedisError:
            return HealthReport(
                status="down", redis=False, ingest_unread=0, ingest_pending=0, dead_letters=0,
                rsus=0, stale_cameras=0, problems=["Redis unreachable"],
            )  # fmt: skip
        lag = state.ingest_lag()
        registry = state.registry()
        now = now_ms()
        stale = sum(1 for cams in registry.values() for t in cams.values() if now - t > stale_ms)
        problems = []
        if lag["unread"] > 10 * config.ingest.batch:
            problems.append(f"ingest lagging: {lag['unread']} entries unread")
        return HealthReport(
            status="degraded" if problems else "ok",
            redis=True,
            ingest_unread=lag["unread"],
            ingest_pending=lag["pending"],
            dead_letters=state.dead_letters(),
            rsus=len(registry),
            stale_cameras=stale,
            problems=problems,
        )

    @app.get("/rsus", response_model=RsuList, tags=["rsus"])
    def list_rsus(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> RsuList:
        registry = state.registry()
        now = now_ms()
        items = []
        for rsu_id in list(registry)[offset : offset + limit]:
            states = state.camera_states(rsu_id, registry[rsu_id])
            cameras = []
            for camera_id, last_seen in sorted(registry[rsu_id].items()):
                status, stale = camera_status(states.get(camera_id, {}), last_seen, now)
                cameras.append(
                    CameraSummary(
                        camera_id=camera_id,
                        last_seen_ms=last_seen,
                        last_seen=_dt(last_seen),
                        status=status,
                        stale=stale,
                    )
                )
            items.append(RsuSummary(rsu_id=rsu_id, cameras=cameras))
        return RsuList(items=items, total=len(registry))

    @app.get("/rsus/{rsu_id}/state", response_model=RsuState, tags=["rsus"])
    def rsu_state(rsu_id: str) -> RsuState:
        cameras = state.cameras(rsu_id)
        if not cameras:
            raise HTTPException(404, f"no RSU {rsu_id!r} has reported")
        now = now_ms()
        out = []
        for camera_id, camera in state.camera_states(rsu_id, cameras).items():
            status, stale = camera_status(camera, cameras.get(camera_id, 0), now)
            frame = camera.get("frame")
            health = camera.get("health") or {}
            out.append(
                CameraState(
                    camera_id=camera_id,
                    status=status,
                    stale=stale,
                    source_connected=health.get("source_connected"),
                    fps=health.get("fps"),
                    latency=health.get("latency"),
                    budget_violations=health.get("budget_violations"),
                    frames_processed=health.get("frames_processed"),
                    spool_depth=health.get("spool_depth"),
                    frame=frame,
                    lanes=camera.get("lanes"),
                    frame_age_ms=now - frame["captured_at_ms"] if frame else None,
                    publish_to_state_ms=(
                        camera["frame_ingested_ms"] - frame["published_at_ms"] if frame else None
                    ),
                    detail=health.get("detail"),
                )
            )
        return RsuState(rsu_id=rsu_id, cameras=out)

    @app.get("/rsus/{rsu_id}/counts", response_model=CountsOut, tags=["rsus"])
    def rsu_counts(
        rsu_id: str,
        since: datetime | None = Query(None, description="ISO 8601 or epoch; default until-1h"),
        until: datetime | None = Query(None, description="ISO 8601 or epoch; default now"),
        bin: int | None = Query(None, ge=1, description="bin seconds; multiple of the base bin"),
        camera_id: str | None = None,
        lane_id: str | None = Query(None, description="'*' for camera totals, or a lane id"),
    ) -> CountsOut:
        base = config.state.bin_s
        bin_s = bin or base
        if bin_s % base:
            raise HTTPException(400, f"bin must be a multiple of the base bin of {base} s")
        until_ms = _ms(until) if until else now_ms()
        since_ms = _ms(since) if since else until_ms - 3_600_000
        if since_ms >= until_ms:
            raise HTTPException(400, "since must be before until")
        if (until_ms - since_ms) // (bin_s * 1000) > config.api.max_bins:
            raise HTTPException(400, f"range holds more than {config.api.max_bins} bins")
        if not state.cameras(rsu_id):
            raise HTTPException(404, f"no RSU {rsu_id!r} has reported")
        bins = state.counts(rsu_id, since_ms, until_ms, bin_s, camera_id, lane_id)
        return CountsOut(
            rsu_id=rsu_id,
            since=_dt(since_ms),
            until=_dt(until_ms),
            bin_s=bin_s,
            bins=[
                CountBinOut(
                    start=_dt(b.start_ms),
                    start_ms=b.start_ms,
                    camera_id=b.camera_id,
                    lane_id=b.lane_id,
                    frames=b.frames,
                    observations=b.observations,
                    counts=b.counts,
                    positive=b.positive,
                    negative=b.negative,
                )
                for b in bins
            ],
        )

    return app
