"""Service routes: health for load balancers and operators, Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from fastapi import APIRouter, Depends, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from citybrain.api.context import ApiContext, context
from citybrain.api.models import HealthReport
from citybrain.dead_letters import DeadLetters
from citybrain.state import now_ms
from common.bus import DEAD_LETTER_CAP

router = APIRouter(tags=["service"])


def health_report(ctx: ApiContext) -> HealthReport:
    """The report, reused for ``api.health_cache_s``: it reads every RSU stream's group
    info, and probes call it often.  A "down" report is never reused, so recovery shows at
    once."""
    cached = ctx.health_cache
    now = time.monotonic()
    if cached is not None and now - cached[0] < ctx.config.api.health_cache_s:
        return cached[1]
    report = _fresh_health_report(ctx)
    ctx.health_cache = (now, report) if report.status != "down" else None
    return report


def _fresh_health_report(ctx: ApiContext) -> HealthReport:
    try:
        ctx.client.ping()
    except redis.RedisError:
        return HealthReport(
            status="down", redis=False, ingest_unread=0, ingest_pending=0, dead_letters=0,
            rsus=0, stale_cameras=0, problems=["Redis unreachable"],
        )  # fmt: skip
    state, config = ctx.state, ctx.config
    views = state.group_views()  # every stream's group read once for the three figures
    lag = state.ingest_lag(views)
    age_ms = state.oldest_unread_age_ms(views)
    registry = state.registry()
    now = now_ms()
    stale_ms = config.state.stale_after_s * 1000
    stale = sum(1 for cams in registry.values() for t in cams.values() if now - t > stale_ms)
    problems = []
    # Cameras still reporting: a silent one is counted in stale_cameras, and its last
    # clock reading says nothing about now.
    clocks = {
        cam: ms
        for cam, ms in state.clock_ahead().items()
        if now - registry.get(cam[0], {}).get(cam[1], 0) <= stale_ms
    }
    ahead = _clock_outliers(clocks, lambda ms: ms > config.state.clock_ahead_alert_s * 1000)
    behind = _clock_outliers(clocks, lambda ms: -ms > config.state.clock_behind_alert_s * 1000)
    if ahead:
        problems.append(
            f"{_cameras(ahead)} stamp their messages more than "
            f"{config.state.clock_ahead_alert_s:g} s after the bus received them "
            f"({_examples(ahead)}): their clocks run ahead, so their counts land in future "
            "bins; check their time sync (NTP)"
        )
    if behind:
        problems.append(
            f"the latest messages of {_cameras(behind)} all reached the bus more than "
            f"{config.state.clock_behind_alert_s:g} s after they were sent "
            f"({_examples(behind)}): their clocks run behind, or they are re-sending what "
            "they spooled during an outage"
        )
    lost = state.lost_entries(views)
    if lost:
        problems.append(
            f"{lost} bus entries were trimmed before ingest read them: ingest was down longer "
            f"than bus.retention_s ({config.bus.retention_s} s) covers"
        )
    if age_ms is not None and age_ms > config.ingest.lag_alert_s * 1000:
        problems.append(
            f"ingest lagging: oldest unread entry is {age_ms / 1000:.1f} s old "
            f"({lag['unread']} unread)"
        )
    dead = DeadLetters(ctx.client, config.bus.partitions)
    trimmed = dead.trimmed()
    if trimmed:
        problems.append(
            f"{trimmed} dead letters were trimmed by the cap of {DEAD_LETTER_CAP} per "
            "partition before anyone looked at them: resend or drop them "
            "(citybrain dead-letters) sooner"
        )
    history_ok = None
    if ctx.history is not None:
        try:
            ctx.history.bins("-", 60, 0, 1)
            history_ok = True
        except Exception:  # any failure of the store means it is not usable
            history_ok = False
            problems.append("history store unreachable")
    return HealthReport(
        status="degraded" if problems else "ok",
        redis=True,
        history=history_ok,
        ingest_unread=lag["unread"],
        ingest_pending=lag["pending"],
        oldest_unread_age_s=None if age_ms is None else round(age_ms / 1000, 3),
        lost_entries=lost,
        dead_letters=dead.count(),
        dead_letters_trimmed=trimmed,
        rsus=len(registry),
        stale_cameras=stale,
        clock_ahead_cameras=len(ahead),
        clock_behind_cameras=len(behind),
        problems=problems,
    )


def _clock_outliers(clocks: dict[tuple[str, str], int], off: Callable[[int], bool]) -> dict:
    return {camera: ms for camera, ms in clocks.items() if off(ms)}


def _cameras(cameras: dict) -> str:
    return f"{len(cameras)} camera{'' if len(cameras) == 1 else 's'}"


def _examples(cameras: dict[tuple[str, str], int], most: int = 3) -> str:
    """The worst few, e.g. "bj-01/cam0 by +28800.0 s, ..." """
    worst = sorted(cameras.items(), key=lambda item: -abs(item[1]))[:most]
    text = ", ".join(f"{rsu}/{cam} by {ms / 1000:+.1f} s" for (rsu, cam), ms in worst)
    return text + (", ..." if len(cameras) > most else "")


@router.get("/health", response_model=HealthReport)
def health(ctx: ApiContext = Depends(context)) -> HealthReport:
    """No API key needed: load balancers and probes call it."""
    return health_report(ctx)


class _StateCollector:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self):  # type: ignore[no-untyped-def]
        report = health_report(self.ctx)
        for name, value, doc in (
            ("citybrain_up", 1.0 if report.redis else 0.0, "Redis reachable"),
            ("citybrain_ingest_unread", report.ingest_unread, "bus entries not yet read"),
            ("citybrain_ingest_pending", report.ingest_pending, "entries read, not acked"),
            ("citybrain_ingest_lag_seconds", report.oldest_unread_age_s or 0.0,
             "age of the oldest unread bus entry"),
            ("citybrain_dead_letters", report.dead_letters, "messages in dead-letter streams"),
            ("citybrain_ingest_lost", report.lost_entries, "entries trimmed unread"),
            ("citybrain_rsus", report.rsus, "RSUs that have reported"),
            ("citybrain_stale_cameras", report.stale_cameras, "cameras silent too long"),
            ("citybrain_clock_ahead_cameras", report.clock_ahead_cameras,
             "cameras whose clocks run ahead of the bus server's"),
            ("citybrain_clock_behind_cameras", report.clock_behind_cameras,
             "cameras whose messages arrive long after they were sent"),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, doc, value=float(value))


@router.get("/metrics", response_class=Response)
def metrics(ctx: ApiContext = Depends(context)) -> Response:
    """Prometheus text format; no API key needed (scrape it from inside the cluster)."""
    registry = CollectorRegistry()
    registry.register(_StateCollector(ctx))  # type: ignore[arg-type]
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
