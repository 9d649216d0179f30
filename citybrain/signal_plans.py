"""Signal configuration and plans per intersection, with an audit trail (Redis).

An operator describes an intersection's signals once (``PUT .../signal-config``): its links
(movements, each from a lane known to citybrain, as ``rsu/camera/lane``), which links
conflict, its green phases, its timing rules and, optionally, its safe fixed plan.  Every
plan that becomes active is first proven safe against that model (``FixedPlan.validate``).

The plan record holds the active plan, the one it replaced (for a revert) and a pending
proposal (from the planner, waiting for an operator's approval).  Every change is written
to the audit stream with who made it and why.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import orjson
import redis
from pydantic import Field, model_validator

from citybrain.config import SignalRulesConfig
from citybrain.signals.intersection import IntersectionError, Link, SignalIntersection
from citybrain.signals.plans import FixedPlan, Stage
from citybrain.signals.safety import SafetyRules, SafetyViolation, transition
from citybrain.signals.webster import webster_plan
from common.config import StrictModel

log = logging.getLogger("citybrain.signals.audit")

CONFIG_KEY = "cb:sig:config:{{{iid}}}"
PLAN_KEY = "cb:sig:plan:{{{iid}}}"
AUDIT_STREAM = "cb:sig:audit"
AUDIT_MAXLEN = 100_000
LANE_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}(/[A-Za-z0-9_.\-]{1,64}){0,2}$"


class SignalLinkSpec(StrictModel):
    index: int = Field(ge=0, le=255, description="signal index in the controller")
    from_lane: str = Field(pattern=LANE_PATTERN, description="incoming lane, rsu/camera/lane")
    to_lane: str = Field(pattern=LANE_PATTERN, description="outgoing lane, rsu/camera/lane")
    direction: Literal["s", "l", "r", "t", "L", "R"] = Field("s", description="movement")
    pedestrian: bool = Field(False, description="a pedestrian crossing, not a vehicle movement")
    crossing_length_m: float = Field(0.0, ge=0, le=100, description="crossing length")


class PlanStage(StrictModel):
    phase: int = Field(ge=0, le=63, description="index into green_phases")
    green_s: float = Field(gt=0, le=600, description="green time of this stage")


class PlanSpec(StrictModel):
    stages: list[PlanStage] = Field(min_length=1, max_length=64)
    offset_s: float = Field(0.0, ge=0, le=3600, description="cycle start against the clock")
    source: str = Field("operator", max_length=40, description="who or what made the plan")

    def to_plan(self, intersection_id: str) -> FixedPlan:
        return FixedPlan(
            intersection_id,
            tuple(Stage(s.phase, s.green_s) for s in self.stages),
            offset_s=self.offset_s,
            source=self.source,
        )

    @classmethod
    def of(cls, plan: FixedPlan) -> PlanSpec:
        return cls(
            stages=[PlanStage(phase=s.phase, green_s=s.green_s) for s in plan.stages],
            offset_s=plan.offset_s,
            source=plan.source,
        )


class SignalConfig(StrictModel):
    links: list[SignalLinkSpec] = Field(min_length=1, max_length=256)
    conflicts: list[tuple[int, int]] = Field(
        default_factory=list, description="pairs of links whose paths cross"
    )
    green_phases: list[str] = Field(
        min_length=1, max_length=64, description="one signal state per phase: G g s r per link"
    )
    rules: SignalRulesConfig = Field(default_factory=SignalRulesConfig)
    fallback_plan: PlanSpec | None = Field(
        None, description="the safe fixed plan; default: Webster with a 90 s cycle"
    )

    def intersection(self, intersection_id: str) -> SignalIntersection:
        links = tuple(
            Link(s.index, s.from_lane, s.to_lane, s.direction, s.pedestrian, s.crossing_length_m)
            for s in sorted(self.links, key=lambda s: s.index)
        )
        pairs = frozenset((min(i, j), max(i, j)) for i, j in self.conflicts if i != j)
        return SignalIntersection(intersection_id, links, pairs, tuple(self.green_phases))

    def safety_rules(self) -> SafetyRules:
        return self.rules.rules()

    def fixed_plan(self, intersection_id: str) -> FixedPlan:
        inter = self.intersection(intersection_id)
        if self.fallback_plan is not None:
            return self.fallback_plan.to_plan(intersection_id)
        return webster_plan(inter, self.safety_rules(), {}, cycle_s=90.0)

    @model_validator(mode="after")
    def _safe(self) -> SignalConfig:
        try:
            inter = self.intersection("config")
            self.fixed_plan("config").validate(inter, self.safety_rules())
        except (IntersectionError, SafetyViolation, ValueError) as exc:
            raise ValueError(str(exc).replace("intersection config: ", "")) from None
        return self


class PlanRecord(StrictModel):
    active: PlanSpec
    mode: Literal["fixed", "planned", "override"] = "fixed"
    previous: PlanSpec | None = None
    previous_mode: Literal["fixed", "planned", "override"] | None = None
    proposed: PlanSpec | None = None
    proposed_at_ms: int | None = None
    updated_at_ms: int
    updated_by: str
    reason: str | None = None


class Spat(StrictModel):
    """Signal phase and timing now, from the active plan and the clock."""

    at_ms: int
    state: str
    phase: int | None = Field(description="green phase shown; None during a change")
    next_phase: int
    time_to_change_s: float = Field(description="seconds until the state changes")
    cycle_s: float


class PlanError(ValueError):
    """A plan or action was refused; the message says why (HTTP 409/422)."""


def spat(plan: FixedPlan, inter: SignalIntersection, rules: SafetyRules, at_ms: int) -> Spat:
    t = at_ms / 1000.0
    k, into = plan.stage_at(t, inter, rules)
    stage = plan.stages[k]
    nxt = plan.stages[(k + 1) % len(plan.stages)]
    cycle = plan.cycle_s(inter, rules)
    if into < stage.green_s:
        return Spat(
            at_ms=at_ms,
            state=inter.green_phases[stage.phase],
            phase=stage.phase,
            next_phase=nxt.phase,
            time_to_change_s=round(stage.green_s - into, 1),
            cycle_s=cycle,
        )
    into -= stage.green_s
    steps = transition(inter.green_phases[stage.phase], inter.green_phases[nxt.phase], rules)
    for state, duration in steps:
        if into < duration:
            return Spat(
                at_ms=at_ms,
                state=state,
                phase=None,
                next_phase=nxt.phase,
                time_to_change_s=round(duration - into, 1),
                cycle_s=cycle,
            )
        into -= duration
    return Spat(
        at_ms=at_ms,
        state=inter.green_phases[nxt.phase],
        phase=nxt.phase,
        next_phase=nxt.phase,
        time_to_change_s=0.0,
        cycle_s=cycle,
    )


class SignalPlanStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    # -- configuration
    def put_config(self, iid: str, config: SignalConfig, actor: str) -> bool:
        """Store the config; a new or changed model resets the active plan to its fixed plan."""
        self.client.set(CONFIG_KEY.format(iid=iid), orjson.dumps(config.model_dump()))
        plan = PlanSpec.of(config.fixed_plan(iid))
        old = self.record(iid)
        record = PlanRecord(
            active=plan,
            mode="fixed",
            previous=old.active if old else None,
            previous_mode=old.mode if old else None,
            updated_at_ms=_now_ms(),
            updated_by=actor,
            reason="signal configuration set",
        )
        self._save(iid, record)
        self.audit(iid, "config", actor, plan, "signal configuration set")
        return old is None

    def config(self, iid: str) -> SignalConfig | None:
        raw = self.client.get(CONFIG_KEY.format(iid=iid))
        return SignalConfig.model_validate(orjson.loads(raw)) if raw else None

    def record(self, iid: str) -> PlanRecord | None:
        raw = self.client.get(PLAN_KEY.format(iid=iid))
        return PlanRecord.model_validate(orjson.loads(raw)) if raw else None

    def _save(self, iid: str, record: PlanRecord) -> None:
        self.client.set(PLAN_KEY.format(iid=iid), orjson.dumps(record.model_dump()))

    def _checked(self, iid: str, plan: PlanSpec) -> tuple[SignalConfig, PlanRecord]:
        config = self.config(iid)
        record = self.record(iid)
        if config is None or record is None:
            raise LookupError(f"intersection {iid!r} has no signal configuration")
        try:
            plan.to_plan(iid).validate(config.intersection(iid), config.safety_rules())
        except (SafetyViolation, ValueError) as exc:
            raise PlanError(f"unsafe plan: {exc}") from None
        return config, record

    # -- actions
    def propose(
        self, iid: str, plan: PlanSpec, actor: str, reason: str | None = None
    ) -> PlanRecord:
        _, record = self._checked(iid, plan)
        record = record.model_copy(update={"proposed": plan, "proposed_at_ms": _now_ms()})
        self._save(iid, record)
        self.audit(iid, "propose", actor, plan, reason)
        return record

    def _existing(self, iid: str) -> PlanRecord:
        record = self.record(iid)
        if record is None:
            raise LookupError(f"intersection {iid!r} has no signal configuration")
        return record

    def _activate(
        self,
        iid: str,
        record: PlanRecord,
        plan: PlanSpec,
        mode: str,
        action: str,
        actor: str,
        reason: str | None,
        *,
        keep_proposal: bool,
    ) -> PlanRecord:
        """Put ``plan`` in force (checked against the current model), remembering the old."""
        self._checked(iid, plan)
        new = PlanRecord(
            active=plan, mode=mode, previous=record.active, previous_mode=record.mode,
            proposed=record.proposed if keep_proposal else None,
            proposed_at_ms=record.proposed_at_ms if keep_proposal else None,
            updated_at_ms=_now_ms(), updated_by=actor, reason=reason,
        )  # fmt: skip
        self._save(iid, new)
        self.audit(iid, action, actor, plan, reason)
        return new

    def approve(self, iid: str, actor: str, reason: str | None = None) -> PlanRecord:
        record = self._existing(iid)
        if record.proposed is None:
            raise PlanError("there is no proposed plan to approve")
        return self._activate(iid, record, record.proposed, "planned", "approve", actor, reason,
                              keep_proposal=False)  # fmt: skip

    def override(self, iid: str, plan: PlanSpec, actor: str, reason: str) -> PlanRecord:
        record = self._existing(iid)
        return self._activate(iid, record, plan, "override", "override", actor, reason,
                              keep_proposal=True)  # fmt: skip

    def revert(self, iid: str, actor: str, reason: str | None = None) -> PlanRecord:
        record = self._existing(iid)
        if record.previous is None:
            raise PlanError("there is no previous plan to revert to")
        return self._activate(iid, record, record.previous, record.previous_mode or "fixed",
                              "revert", actor, reason, keep_proposal=True)  # fmt: skip

    # -- audit
    def audit(
        self, iid: str, action: str, actor: str, plan: PlanSpec | None, reason: str | None
    ) -> None:
        entry = {
            "at_ms": _now_ms(),
            "intersection": iid,
            "action": action,
            "actor": actor,
            "reason": reason or "",
            "plan": orjson.dumps(plan.model_dump()) if plan else b"",
        }
        self.client.xadd(AUDIT_STREAM, entry, maxlen=AUDIT_MAXLEN, approximate=True)
        log.info("%s %s by %s%s", action, iid, actor, f": {reason}" if reason else "")

    def audit_log(self, iid: str | None = None, limit: int = 100) -> list[dict]:
        out: list[dict] = []
        last = "+"
        while len(out) < limit:
            batch = self.client.xrevrange(AUDIT_STREAM, max=last, count=500)
            if not batch:
                break
            for entry_id, fields in batch:
                f = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in fields.items()
                }
                if iid is not None and f.get("intersection") != iid:
                    continue
                out.append(
                    {
                        "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                        "at_ms": int(f["at_ms"]),
                        "intersection": f["intersection"],
                        "action": f["action"],
                        "actor": f["actor"],
                        "reason": f["reason"] or None,
                        "plan": orjson.loads(f["plan"]) if f.get("plan") else None,
                    }
                )
                if len(out) >= limit:
                    break
            oldest = batch[-1][0]
            oldest = oldest.decode() if isinstance(oldest, bytes) else oldest
            last = "(" + oldest
        return out


def _now_ms() -> int:
    return int(time.time() * 1000)
