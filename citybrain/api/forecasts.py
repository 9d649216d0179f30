"""Forecast routes: per detector (lane), and per intersection."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from citybrain.api.context import ApiContext, context, viewer
from citybrain.forecast.online import stored_forecasts
from citybrain.intersections import ID_PATTERN

router = APIRouter(tags=["forecasts"])


class HorizonOut(BaseModel):
    minutes: int
    flow_veh_h: float = Field(ge=0, description="forecast flow, never negative or NaN")


class ForecastOut(BaseModel):
    detector: str = Field(description="rsu_id/camera_id/lane_id")
    generated_ms: int
    bin_s: int
    method: str = Field(description="model, historical_average, last_value or none")
    reason: str | None = Field(None, description="why a fallback made it, when one did")
    horizons: list[HorizonOut]


class ApproachForecast(BaseModel):
    name: str
    horizons: list[HorizonOut] = Field(description="its lanes' flows, summed")
    lanes: list[ForecastOut]
    fallback_lanes: int = Field(description="lanes a fallback forecast, not the model")


class IntersectionForecast(BaseModel):
    id: str
    approaches: list[ApproachForecast]


def _out(raw: dict, horizon: int | None) -> ForecastOut:
    horizons = [
        HorizonOut(minutes=(k + 1) * raw["bin_s"] // 60, flow_veh_h=v)
        for k, v in enumerate(raw["flows_veh_h"])
    ]
    if horizon is not None:
        horizons = [h for h in horizons if h.minutes == horizon]
    return ForecastOut(
        detector=raw["detector"],
        generated_ms=raw["generated_ms"],
        bin_s=raw["bin_s"],
        method=raw["method"],
        reason=raw.get("reason"),
        horizons=horizons,
    )


@router.get("/forecasts", response_model=list[ForecastOut], dependencies=[Depends(viewer)])
def forecasts(
    detector: str | None = Query(
        None, max_length=200, description="rsu_id/camera_id/lane_id; all when omitted"
    ),
    horizon: int | None = Query(None, ge=1, le=1440, description="minutes ahead, e.g. 15"),
    ctx: ApiContext = Depends(context),
) -> list[ForecastOut]:
    """The latest forecasts (made at each bin close by `citybrain forecast serve`)."""
    found = stored_forecasts(ctx.client, [detector] if detector else None)
    if detector and not found:
        raise HTTPException(404, f"no forecast for detector {detector!r}")
    out = [_out(raw, horizon) for raw in found]
    if horizon is not None and out and not out[0].horizons:
        raise HTTPException(400, f"no {horizon}-minute horizon (bins of {found[0]['bin_s']} s)")
    return out


@router.get(
    "/intersections/{intersection_id}/forecast",
    response_model=IntersectionForecast,
    dependencies=[Depends(viewer)],
)
def intersection_forecast(
    intersection_id: str = Path(pattern=ID_PATTERN), ctx: ApiContext = Depends(context)
) -> IntersectionForecast:
    """Per approach: its lanes' forecasts and their sum, what the signal planner reads."""
    intersection = ctx.intersections.get(intersection_id)
    if intersection is None:
        raise HTTPException(404, f"no intersection {intersection_id!r}")
    approaches = []
    for approach in intersection.approaches:
        ids = [f"{r.rsu_id}/{r.camera_id}/{r.lane_id}" for r in approach.lanes]
        lanes = [_out(raw, None) for raw in stored_forecasts(ctx.client, ids)]
        steps = min((len(lane.horizons) for lane in lanes), default=0)
        total = [
            HorizonOut(
                minutes=lanes[0].horizons[k].minutes,
                flow_veh_h=round(sum(lane.horizons[k].flow_veh_h for lane in lanes), 1),
            )
            for k in range(steps)
        ]
        approaches.append(
            ApproachForecast(
                name=approach.name,
                horizons=total,
                lanes=lanes,
                fallback_lanes=sum(lane.method != "model" for lane in lanes),
            )
        )
    return IntersectionForecast(id=intersection_id, approaches=approaches)
