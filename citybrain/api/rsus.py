"""RSU routes: registry, live state, live lanes, binned counts and history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from citybrain.api.context import ApiContext, context, operator, viewer
from citybrain.api.models import (
    BusCredentials,
    CameraState,
    CameraSummary,
    CountBinOut,
    CountsOut,
    HistoryBinOut,
    HistoryOut,
    LaneStateOut,
    RsuLanes,
    RsuList,
    RsuState,
    RsuSummary,
    dt_of,
    ms_of,
)
from citybrain.bus_acl import issue_rsu_credentials, revoke_rsu_credentials
from citybrain.history import BIN_SIZES_S, LaneBin
from citybrain.intersections import ID_PATTERN
from citybrain.lane_state import rsu_lane_states
from citybrain.registry import RsuInfo
from citybrain.state import now_ms
from common.bus import stream_key

router = APIRouter(prefix="/rsus", tags=["rsus"])


def camera_status(ctx: ApiContext, camera: dict[str, Any], last_seen: int, now: int):
    stale = now - last_seen > ctx.config.state.stale_after_s * 1000
    health = camera.get("health")
    status = health["status"] if health else "unknown"
    if stale and status != "down":
        status = "stale"
    return status, stale


def time_range(
    since: datetime | None, until: datetime | None, bin_s: int, max_bins: int
) -> tuple[int, int]:
    until_ms = ms_of(until) if until else now_ms()
    since_ms = ms_of(since) if since else until_ms - 3_600_000
    if since_ms >= until_ms:
        raise HTTPException(400, "since must be before until")
    if (until_ms - since_ms) // (bin_s * 1000) > max_bins:
        raise HTTPException(400, f"the range holds more than {max_bins} bins of {bin_s} s")
    return since_ms, until_ms


def known(ctx: ApiContext, rsu_id: str) -> None:
    if not ctx.state.cameras(rsu_id) and ctx.registry.get(rsu_id) is None:
        raise HTTPException(404, f"no RSU {rsu_id!r} has reported or been registered")


@router.get("", response_model=RsuList, dependencies=[Depends(viewer)])
def list_rsus(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    ctx: ApiContext = Depends(context),
) -> RsuList:
    """RSUs that reported or were registered, in id order."""
    reported = ctx.state.registry()
    registered = ctx.registry.all()
    ids = sorted(set(reported) | set(registered))
    now = now_ms()
    items = [
        rsu_summary(ctx, rsu_id, reported.get(rsu_id, {}), registered.get(rsu_id), now)
        for rsu_id in ids[offset : offset + limit]
    ]
    return RsuList(items=items, total=len(ids), limit=limit, offset=offset)


def rsu_summary(
    ctx: ApiContext, rsu_id: str, seen: dict[str, int], info: RsuInfo | None, now: int
) -> RsuSummary:
    states = ctx.state.camera_states(rsu_id, seen) if seen else {}
    cameras = []
    for camera_id, last_seen in sorted(seen.items()):
        status, stale = camera_status(ctx, states.get(camera_id, {}), last_seen, now)
        cameras.append(
            CameraSummary(
                camera_id=camera_id,
                last_seen_ms=last_seen,
                last_seen=dt_of(last_seen),
                status=status,
                stale=stale,
            )
        )
    return RsuSummary(rsu_id=rsu_id, registered=info is not None, info=info, cameras=cameras)


RsuPath = Path(pattern=ID_PATTERN, description="RSU id")


@router.put("/{rsu_id}", response_model=RsuInfo, dependencies=[Depends(operator)])
def register_rsu(
    info: RsuInfo,
    response: Response,
    rsu_id: str = RsuPath,
    ctx: ApiContext = Depends(context),
) -> RsuInfo:
    """Register an RSU, or replace what is registered about it (operator)."""
    created = ctx.registry.put(rsu_id, info)
    response.status_code = 201 if created else 200
    return info


@router.get("/{rsu_id}", response_model=RsuSummary, dependencies=[Depends(viewer)])
def get_rsu(rsu_id: str = RsuPath, ctx: ApiContext = Depends(context)) -> RsuSummary:
    known(ctx, rsu_id)
    return rsu_summary(ctx, rsu_id, ctx.state.cameras(rsu_id), ctx.registry.get(rsu_id), now_ms())


@router.delete("/{rsu_id}", status_code=204, dependencies=[Depends(operator)])
def unregister_rsu(rsu_id: str = RsuPath, ctx: ApiContext = Depends(context)) -> Response:
    """Forget what is registered about the RSU (its data stays until it expires)."""
    if not ctx.registry.delete(rsu_id):
        raise HTTPException(404, f"RSU {rsu_id!r} is not registered")
    return Response(status_code=204)


@router.post(
    "/{rsu_id}/credentials",
    response_model=BusCredentials,
    status_code=201,
    dependencies=[Depends(operator)],
)
def issue_credentials(rsu_id: str = RsuPath, ctx: ApiContext = Depends(context)) -> BusCredentials:
    """New bus credentials for the RSU (operator): a Redis user that can only append to this
    RSU's stream. Any earlier password of the RSU stops working. Shown once."""
    credentials = issue_rsu_credentials(ctx.client, rsu_id, ctx.config.bus.partitions)
    user, password = credentials.split(":", 1)
    return BusCredentials(
        rsu_id=rsu_id,
        username=user,
        password=password,
        stream=stream_key(rsu_id, ctx.config.bus.partitions),
        partitions=ctx.config.bus.partitions,
    )


@router.delete("/{rsu_id}/credentials", status_code=204, dependencies=[Depends(operator)])
def revoke_credentials(rsu_id: str = RsuPath, ctx: ApiContext = Depends(context)) -> Response:
    """Revoke the RSU's bus credentials: it can no longer publish (it spools meanwhile)."""
    if not revoke_rsu_credentials(ctx.client, rsu_id):
        raise HTTPException(404, f"RSU {rsu_id!r} has no bus credentials")
    return Response(status_code=204)


@router.get("/{rsu_id}/state", response_model=RsuState, dependencies=[Depends(viewer)])
def rsu_state(rsu_id: str = RsuPath, ctx: ApiContext = Depends(context)) -> RsuState:
    """Per camera: the latest frame, the latest lane interval, and the RSU's health."""
    cameras = ctx.state.cameras(rsu_id)
    if not cameras:
        raise HTTPException(404, f"no RSU {rsu_id!r} has reported")
    now = now_ms()
    out = []
    for camera_id, camera in ctx.state.camera_states(rsu_id, cameras).items():
        status, stale = camera_status(ctx, camera, cameras.get(camera_id, 0), now)
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
                clock_ahead_ms=camera.get("clock_ahead_ms"),
                detail=health.get("detail"),
            )
        )
    return RsuState(rsu_id=rsu_id, cameras=out)


@router.get("/{rsu_id}/lanes", response_model=RsuLanes, dependencies=[Depends(viewer)])
def rsu_lanes(rsu_id: str = RsuPath, ctx: ApiContext = Depends(context)) -> RsuLanes:
    """Live figures per lane: flow over the live window, and the latest speed, occupancy
    and queue."""
    if not ctx.state.cameras(rsu_id):
        raise HTTPException(404, f"no RSU {rsu_id!r} has reported")
    lanes = rsu_lane_states(
        ctx.state, rsu_id, ctx.config.api.live_window_s, ctx.config.state.stale_after_s
    )
    return RsuLanes(rsu_id=rsu_id, lanes=[LaneStateOut(**lane.__dict__) for lane in lanes])


@router.get("/{rsu_id}/counts", response_model=CountsOut, dependencies=[Depends(viewer)])
def rsu_counts(
    rsu_id: str = RsuPath,
    since: datetime | None = Query(None, description="ISO 8601 or epoch; default until-1h"),
    until: datetime | None = Query(None, description="ISO 8601 or epoch; default now"),
    bin: int | None = Query(
        None, ge=1, le=86_400, description="bin seconds; a multiple of the base bin"
    ),
    camera_id: str | None = Query(None, pattern=ID_PATTERN),
    lane_id: str | None = Query(
        None, max_length=80, description="'*' for camera totals, or a lane id"
    ),
    ctx: ApiContext = Depends(context),
) -> CountsOut:
    """Recent binned counts kept in Redis (counts_retention_s, a day by default)."""
    base = ctx.config.state.bin_s
    bin_s = bin or base
    if bin_s % base:
        raise HTTPException(400, f"bin must be a multiple of the base bin of {base} s")
    since_ms, until_ms = time_range(since, until, bin_s, ctx.config.api.max_bins)
    if not ctx.state.cameras(rsu_id):
        raise HTTPException(404, f"no RSU {rsu_id!r} has reported")
    bins = ctx.state.counts(rsu_id, since_ms, until_ms, bin_s, camera_id, lane_id)
    return CountsOut(
        rsu_id=rsu_id,
        since=dt_of(since_ms),
        until=dt_of(until_ms),
        bin_s=bin_s,
        bins=[
            CountBinOut(
                start=dt_of(b.start_ms),
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


@router.get("/{rsu_id}/history", response_model=HistoryOut, dependencies=[Depends(viewer)])
def rsu_history(
    rsu_id: str = RsuPath,
    since: datetime | None = Query(None, description="ISO 8601 or epoch; default until-1h"),
    until: datetime | None = Query(None, description="ISO 8601 or epoch; default now"),
    bin: int = Query(300, description=f"bin seconds: one of {list(BIN_SIZES_S)}"),
    camera_id: str | None = Query(None, pattern=ID_PATTERN),
    lane_id: str | None = Query(None, pattern=ID_PATTERN),
    limit: int = Query(10_000, ge=1, le=100_000),
    ctx: ApiContext = Depends(context),
) -> HistoryOut:
    """Per-lane history from the durable store: flow, speed, occupancy, longest queue."""
    if ctx.history is None:
        raise HTTPException(404, "history is disabled on this center (history.enabled)")
    if bin not in BIN_SIZES_S:
        raise HTTPException(400, f"bin must be one of {list(BIN_SIZES_S)}")
    since_ms, until_ms = time_range(since, until, bin, ctx.config.api.max_bins)
    bins = ctx.history.bins(rsu_id, bin, since_ms, until_ms, camera_id, lane_id, limit)
    return history_out(rsu_id, since_ms, until_ms, bin, bins)


def history_out(
    rsu_id: str, since_ms: int, until_ms: int, bin_s: int, bins: list[LaneBin]
) -> HistoryOut:
    fields = set(HistoryBinOut.model_fields) - {"start", "start_ms"}
    return HistoryOut(
        rsu_id=rsu_id,
        since=dt_of(since_ms),
        until=dt_of(until_ms),
        bin_s=bin_s,
        bins=[
            HistoryBinOut(
                start=dt_of(b.bin_start_ms),
                start_ms=b.bin_start_ms,
                **{k: v for k, v in b.__dict__.items() if k in fields},
            )
            for b in bins
        ],
    )
