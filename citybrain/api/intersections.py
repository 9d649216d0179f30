"""Intersection routes: the registry, live state, history, and a live feed (SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from citybrain.api.context import ApiContext, context, operator, viewer
from citybrain.api.models import (
    HistoryOut,
    IntersectionList,
    IntersectionState,
)
from citybrain.api.rsus import history_out, time_range
from citybrain.history import BIN_SIZES_S
from citybrain.intersections import ID_PATTERN, Intersection, intersection_state
from citybrain.state import now_ms

router = APIRouter(prefix="/intersections", tags=["intersections"])
IdPath = Path(pattern=ID_PATTERN, description="intersection id")


def _get(ctx: ApiContext, intersection_id: str) -> Intersection:
    found = ctx.intersections.get(intersection_id)
    if found is None:
        raise HTTPException(404, f"no intersection {intersection_id!r}")
    return found


def live_state(ctx: ApiContext, intersection: Intersection) -> IntersectionState:
    window = ctx.config.api.live_window_s
    approaches = intersection_state(ctx.state, intersection, window, ctx.config.state.stale_after_s)
    flows = [a.flow_veh_h for a in approaches if a.flow_veh_h is not None]
    queues = [a.queue_vehicles for a in approaches if a.queue_vehicles is not None]
    return IntersectionState(
        id=intersection.id,
        name=intersection.name,
        at_ms=now_ms(),
        window_s=window,
        approaches=approaches,
        flow_veh_h=round(sum(flows), 1) if flows else None,
        queue_vehicles=sum(queues) if queues else None,
    )


@router.get("", response_model=IntersectionList, dependencies=[Depends(viewer)])
def list_intersections(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    ctx: ApiContext = Depends(context),
) -> IntersectionList:
    ids = ctx.intersections.ids()
    items = [i for i in (ctx.intersections.get(x) for x in ids[offset : offset + limit]) if i]
    return IntersectionList(items=items, total=len(ids), limit=limit, offset=offset)


@router.put("/{intersection_id}", response_model=Intersection, dependencies=[Depends(operator)])
def put_intersection(
    body: Intersection,
    response: Response,
    intersection_id: str = IdPath,
    ctx: ApiContext = Depends(context),
) -> Intersection:
    """Create or replace an intersection: its approaches and the RSU lanes of each."""
    if body.id != intersection_id:
        raise HTTPException(400, f"the body's id {body.id!r} is not the path's {intersection_id!r}")
    response.status_code = 201 if ctx.intersections.put(body) else 200
    return body


@router.get("/{intersection_id}", response_model=Intersection, dependencies=[Depends(viewer)])
def get_intersection(
    intersection_id: str = IdPath, ctx: ApiContext = Depends(context)
) -> Intersection:
    return _get(ctx, intersection_id)


@router.delete("/{intersection_id}", status_code=204, dependencies=[Depends(operator)])
def delete_intersection(
    intersection_id: str = IdPath, ctx: ApiContext = Depends(context)
) -> Response:
    if not ctx.intersections.delete(intersection_id):
        raise HTTPException(404, f"no intersection {intersection_id!r}")
    return Response(status_code=204)


@router.get(
    "/{intersection_id}/state", response_model=IntersectionState, dependencies=[Depends(viewer)]
)
def get_state(
    intersection_id: str = IdPath, ctx: ApiContext = Depends(context)
) -> IntersectionState:
    """Live state per approach and lane: flow, queue, occupancy, speed, counts."""
    return live_state(ctx, _get(ctx, intersection_id))


@router.get(
    "/{intersection_id}/history", response_model=list[HistoryOut], dependencies=[Depends(viewer)]
)
def get_history(
    intersection_id: str = IdPath,
    since: datetime | None = Query(None, description="ISO 8601 or epoch; default until-1h"),
    until: datetime | None = Query(None, description="ISO 8601 or epoch; default now"),
    bin: int = Query(300, description=f"bin seconds: one of {list(BIN_SIZES_S)}"),
    ctx: ApiContext = Depends(context),
) -> list[HistoryOut]:
    """History of each lane of the intersection, grouped by RSU (the forecaster's input)."""
    intersection = _get(ctx, intersection_id)
    if ctx.history is None:
        raise HTTPException(404, "history is disabled on this center (history.enabled)")
    if bin not in BIN_SIZES_S:
        raise HTTPException(400, f"bin must be one of {list(BIN_SIZES_S)}")
    since_ms, until_ms = time_range(since, until, bin, ctx.config.api.max_bins)
    wanted: dict[str, set[tuple[str, str]]] = {}
    for approach in intersection.approaches:
        for ref in approach.lanes:
            wanted.setdefault(ref.rsu_id, set()).add((ref.camera_id, ref.lane_id))
    out = []
    for rsu_id, lanes in sorted(wanted.items()):
        # One query per lane: only the intersection's lanes are read, not all of the RSU's.
        bins = [
            b
            for camera_id, lane_id in sorted(lanes)
            for b in ctx.history.bins(rsu_id, bin, since_ms, until_ms, camera_id, lane_id)
        ]
        bins.sort(key=lambda b: (b.bin_start_ms, b.camera_id, b.lane_id))
        out.append(history_out(rsu_id, since_ms, until_ms, bin, bins))
    return out


@router.get(
    "/{intersection_id}/feed",
    dependencies=[Depends(viewer)],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def feed(
    request: Request,
    intersection_id: str = IdPath,
    interval: float = Query(1.0, ge=0.2, le=60.0, description="seconds between updates"),
    max_events: int | None = Query(None, ge=1, le=100_000, description="stop after this many"),
    ctx: ApiContext = Depends(context),
) -> StreamingResponse:
    """Server-sent events: a ``state`` event with the intersection's live state whenever it
    changed, checked every ``interval`` seconds, and a comment as a keep-alive otherwise."""
    intersection = await run_in_threadpool(_get, ctx, intersection_id)

    async def events() -> AsyncIterator[bytes]:
        sent, last = 0, b""
        while max_events is None or sent < max_events:
            if await request.is_disconnected():
                return
            snapshot = await run_in_threadpool(live_state, ctx, intersection)
            body = orjson.dumps(snapshot.model_dump(exclude={"at_ms"}))
            if body != last:
                last = body
                sent += 1
                yield b"event: state\ndata: " + orjson.dumps(snapshot.model_dump()) + b"\n\n"
            else:
                yield b": keep-alive\n\n"
            await asyncio.sleep(interval)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
