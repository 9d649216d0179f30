"""Signal routes: configuration, the active plan with SPaT, and audited operator actions.

Reading needs the viewer role; every change needs operator (or admin) and is written to
the audit stream with the key that made it and the reason given.  A plan is checked
against the intersection's model and timing rules before it is stored: an unsafe plan is
refused with 422 and the rule it breaks.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import Field

from citybrain.api.context import ApiContext, context, operator, viewer
from citybrain.auth import ApiKey
from citybrain.intersections import ID_PATTERN
from citybrain.signal_plans import (
    PlanError,
    PlanRecord,
    PlanSpec,
    SignalConfig,
    SignalPlanStore,
    Spat,
    spat,
)
from citybrain.state import now_ms
from common.config import StrictModel

router = APIRouter(prefix="/intersections", tags=["signals"])
audit_router = APIRouter(tags=["signals"])
IdPath = Path(pattern=ID_PATTERN, description="intersection id")


class SignalPlanOut(StrictModel):
    intersection: str
    record: PlanRecord
    spat: Spat
    rules: dict


class ActionIn(StrictModel):
    reason: str | None = Field(None, max_length=500, description="why; kept in the audit log")


class ProposalIn(StrictModel):
    plan: PlanSpec
    reason: str | None = Field(None, max_length=500)


class OverrideIn(StrictModel):
    plan: PlanSpec
    reason: str = Field(min_length=3, max_length=500, description="required for an override")


class AuditEntry(StrictModel):
    id: str
    at_ms: int
    intersection: str
    action: str
    actor: str
    reason: str | None
    plan: dict | None


class AuditList(StrictModel):
    items: list[AuditEntry]


def _actor(key: ApiKey | None) -> str:
    return f"{key.name} ({key.key_id})" if key else "anonymous (auth off)"


def _store(ctx: ApiContext) -> SignalPlanStore:
    return SignalPlanStore(ctx.client)


def _exists(ctx: ApiContext, iid: str) -> None:
    if ctx.intersections.get(iid) is None:
        raise HTTPException(404, f"no intersection {iid!r}")


def _plan_out(store: SignalPlanStore, iid: str) -> SignalPlanOut:
    config = store.config(iid)
    record = store.record(iid)
    if config is None or record is None:
        raise HTTPException(404, f"intersection {iid!r} has no signal configuration")
    inter = config.intersection(iid)
    rules = config.safety_rules()
    now = now_ms()
    return SignalPlanOut(
        intersection=iid,
        record=record,
        spat=spat(record.active.to_plan(iid), inter, rules, now),
        rules=config.rules.model_dump(),
    )


def _act(ctx: ApiContext, iid: str, action: str, *args) -> SignalPlanOut:
    """Run a store action (propose, approve, override, revert) and answer with the result."""
    store = _store(ctx)
    try:
        getattr(store, action)(iid, *args)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except PlanError as exc:
        status = 422 if str(exc).startswith("unsafe plan") else 409
        raise HTTPException(status, str(exc)) from None
    return _plan_out(store, iid)


@router.put("/{intersection_id}/signal-config", response_model=SignalConfig)
def put_signal_config(
    body: SignalConfig,
    response: Response,
    intersection_id: str = IdPath,
    ctx: ApiContext = Depends(context),
    key: ApiKey | None = Depends(operator),
) -> SignalConfig:
    """Set the intersection's signal model; its safe fixed plan becomes the active plan."""
    _exists(ctx, intersection_id)
    created = _store(ctx).put_config(intersection_id, body, _actor(key))
    response.status_code = 201 if created else 200
    return body


@router.get("/{intersection_id}/signal-config", response_model=SignalConfig,
            dependencies=[Depends(viewer)])  # fmt: skip
def get_signal_config(intersection_id: str = IdPath, ctx: ApiContext = Depends(context)):
    config = _store(ctx).config(intersection_id)
    if config is None:
        raise HTTPException(404, f"intersection {intersection_id!r} has no signal configuration")
    return config


@router.get("/{intersection_id}/signal-plan", response_model=SignalPlanOut,
            dependencies=[Depends(viewer)])  # fmt: skip
def get_signal_plan(intersection_id: str = IdPath, ctx: ApiContext = Depends(context)):
    """The active plan, the pending proposal, and SPaT: the state now and time to change."""
    return _plan_out(_store(ctx), intersection_id)


@router.post("/{intersection_id}/signal-plan/proposal", response_model=SignalPlanOut)
def propose_plan(
    body: ProposalIn,
    intersection_id: str = IdPath,
    ctx: ApiContext = Depends(context),
    key: ApiKey | None = Depends(operator),
) -> SignalPlanOut:
    """Propose a plan for approval (the planner does this too); 422 when it is unsafe."""
    return _act(ctx, intersection_id, "propose", body.plan, _actor(key), body.reason)


@router.post("/{intersection_id}/signal-plan/approve", response_model=SignalPlanOut)
def approve_plan(
    body: ActionIn,
    intersection_id: str = IdPath,
    ctx: ApiContext = Depends(context),
    key: ApiKey | None = Depends(operator),
) -> SignalPlanOut:
    """Make the proposed plan active; 409 when nothing is proposed."""
    return _act(ctx, intersection_id, "approve", _actor(key), body.reason)


@router.post("/{intersection_id}/signal-plan/override", response_model=SignalPlanOut)
def override_plan(
    body: OverrideIn,
    intersection_id: str = IdPath,
    ctx: ApiContext = Depends(context),
    key: ApiKey | None = Depends(operator),
) -> SignalPlanOut:
    """Put an operator's plan in force now (reason required); 422 when it is unsafe."""
    return _act(ctx, intersection_id, "override", body.plan, _actor(key), body.reason)


@router.post("/{intersection_id}/signal-plan/revert", response_model=SignalPlanOut)
def revert_plan(
    body: ActionIn,
    intersection_id: str = IdPath,
    ctx: ApiContext = Depends(context),
    key: ApiKey | None = Depends(operator),
) -> SignalPlanOut:
    """Go back to the plan that was active before; 409 when there is none."""
    return _act(ctx, intersection_id, "revert", _actor(key), body.reason)


@audit_router.get("/signal-audit", response_model=AuditList, dependencies=[Depends(operator)])
def signal_audit(
    intersection: str | None = Query(None, pattern=ID_PATTERN),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ApiContext = Depends(context),
) -> AuditList:
    """Who changed which signal plan, when and why, newest first."""
    return AuditList(items=[AuditEntry(**e) for e in _store(ctx).audit_log(intersection, limit)])
