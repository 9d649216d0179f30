"""``GET /routes``: fastest routes on forecast travel times, with alternatives and closures."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from citybrain.api.context import ApiContext, context, viewer
from citybrain.api.models import ms_of
from citybrain.routing.graph import GraphError
from citybrain.routing.router import NoRouteError
from citybrain.routing.service import RoutingService
from common.config import StrictModel

router = APIRouter(tags=["routing"])


class RouteOut(StrictModel):
    edges: list[str]
    nodes: list[str]
    depart_at: datetime
    arrive_at: datetime
    travel_time_s: float
    length_m: float


class RoutesOut(StrictModel):
    routes: list[RouteOut]
    travel_times: str = Field(description="where the edge times came from")


def _service(ctx: ApiContext) -> RoutingService:
    if ctx.routing is None:
        try:
            ctx.routing = RoutingService(ctx.config.routing, ctx.client, ctx.state)
        except GraphError as exc:
            raise HTTPException(503, str(exc)) from None
    return ctx.routing


@router.get("/routes", response_model=RoutesOut, dependencies=[Depends(viewer)])
async def routes(
    from_: str = Query(alias="from", min_length=1, max_length=200, description="node id"),
    to: str = Query(min_length=1, max_length=200, description="node id"),
    depart_at: datetime | None = Query(None, description="ISO 8601 or epoch; default now"),
    alternatives: int = Query(1, ge=1, le=5),
    avoid: str | None = Query(None, max_length=5000, description="closed edge ids, comma list"),
    ctx: ApiContext = Depends(context),
) -> RoutesOut:
    """The fastest route (and up to ``alternatives - 1`` distinct others) leaving at
    ``depart_at``, on each edge's travel time when the route reaches it."""
    service = await run_in_threadpool(_service, ctx)
    depart = ms_of(depart_at) / 1000.0 if depart_at else datetime.now(UTC).timestamp()
    closed = [e for e in (avoid or "").split(",") if e]

    def find():
        service.refresh()
        return service.router.route(from_, to, depart, alternatives, closed)

    try:
        found = await run_in_threadpool(find)
    except GraphError as exc:
        raise HTTPException(422, str(exc)) from None
    except NoRouteError as exc:
        raise HTTPException(404, str(exc)) from None
    return RoutesOut(
        routes=[
            RouteOut(
                edges=list(r.edges), nodes=list(r.nodes),
                depart_at=datetime.fromtimestamp(r.depart_s, UTC),
                arrive_at=datetime.fromtimestamp(r.arrive_s, UTC),
                travel_time_s=round(r.travel_time_s, 2), length_m=round(r.length_m, 1),
            )
            for r in found
        ],
        travel_times=service.source,
    )  # fmt: skip
