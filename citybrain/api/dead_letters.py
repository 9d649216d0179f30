"""Dead letters: read them (operator), send them through ingest again (operator), drop
them (admin).  See :mod:`citybrain.dead_letters`."""

from __future__ import annotations

import base64
import logging
from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from citybrain.api.context import ApiContext, admin, context, operator
from citybrain.api.models import dt_of
from citybrain.auth import ApiKey
from citybrain.dead_letters import DeadLetter, DeadLetterError, DeadLetters
from common.config import StrictModel

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])
log = logging.getLogger("citybrain.api.dead_letters")

LETTER_ID = r"^\d{1,4}-\d{1,20}-\d{1,20}$"
IdPath = Path(pattern=LETTER_ID, description="<partition>-<entry id>, e.g. 3-1700000000000-0")


class DeadLetterOut(BaseModel):
    id: str = Field(description="<partition>-<entry id in the partition's dead-letter stream>")
    rsu_id: str | None = Field(description="the RSU whose stream it came from")
    source: str = Field(description="that stream")
    source_entry_id: str
    reason: str = Field(description="why ingest set it aside")
    at: datetime = Field(description="when it was set aside (UTC)")
    at_ms: int
    size: int = Field(description="bytes of the message as it was sent")
    truncated: bool = Field(description="over the size limit: only its first part was kept")
    resendable: bool
    not_resendable_because: str | None = None


class DeadLetterDetail(DeadLetterOut):
    payload: str | None = Field(description="the message as sent, when it is UTF-8 text")
    payload_base64: str | None = Field(description="the message as sent, when it is not")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    total: int = Field(description="dead letters matching the filters, of those scanned")
    limit: int
    offset: int
    scanned: int = Field(description="dead letters looked at, newest first")
    complete: bool = Field(description="every dead letter was looked at (see scan)")


class ResendRequest(StrictModel):
    ids: list[str] = Field(min_length=1, max_length=1000, description="dead-letter ids")


class Refused(BaseModel):
    id: str
    reason: str


class ResendOutcome(BaseModel):
    sent: list[str] = Field(description="appended to their RSU streams again")
    gone: list[str] = Field(description="no longer there: sent or dropped by someone else")
    refused: list[Refused] = Field(description="cannot be sent again, and why")


def _summary(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id, "rsu_id": letter.rsu_id, "source": letter.source,
        "source_entry_id": letter.source_entry_id, "reason": letter.reason,
        "at": dt_of(letter.at_ms), "at_ms": letter.at_ms, "size": letter.size,
        "truncated": letter.truncated, "resendable": letter.resendable is None,
        "not_resendable_because": letter.resendable,
    }  # fmt: skip


def _letters(ctx: ApiContext) -> DeadLetters:
    return DeadLetters(ctx.client, ctx.config.bus.partitions)


@router.get("", response_model=DeadLetterPage, dependencies=[Depends(operator)])
async def list_dead_letters(
    rsu_id: str | None = Query(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$"),
    reason: str | None = Query(None, max_length=200, description="text the reason holds"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    scan: int = Query(10_000, ge=1, le=100_000, description="look at this many at most"),
    ctx: ApiContext = Depends(context),
) -> DeadLetterPage:
    """Newest first, without their payloads."""
    found = await run_in_threadpool(_letters(ctx).scan, rsu_id, reason, scan)
    items = [DeadLetterOut(**_summary(d)) for d in found.items[offset : offset + limit]]
    return DeadLetterPage(
        items=items, total=len(found.items), limit=limit, offset=offset,
        scanned=found.scanned, complete=found.complete,
    )  # fmt: skip


@router.get("/{letter_id}", response_model=DeadLetterDetail, dependencies=[Depends(operator)])
def get_dead_letter(
    letter_id: str = IdPath, ctx: ApiContext = Depends(context)
) -> DeadLetterDetail:
    """One dead letter with its payload."""
    letter = _found(ctx, letter_id)
    try:
        text, raw = letter.payload.decode(), None
    except UnicodeDecodeError:
        text, raw = None, base64.b64encode(letter.payload).decode()
    return DeadLetterDetail(**_summary(letter), payload=text, payload_base64=raw)


@router.post("/resend", response_model=ResendOutcome)
def resend_dead_letters(
    body: ResendRequest, ctx: ApiContext = Depends(context), by: ApiKey | None = Depends(operator)
) -> ResendOutcome:
    """Send each through ingest again: applied if its cause was fixed, dead-lettered anew
    if not; a message that was applied after all is not counted twice."""
    letters = _letters(ctx)
    outcome = ResendOutcome(sent=[], gone=[], refused=[])
    for letter_id in dict.fromkeys(body.ids):
        try:
            letter = letters.get(letter_id)
            if letter is None or not letters.resend(letter):
                outcome.gone.append(letter_id)
            else:
                outcome.sent.append(letter_id)
        except DeadLetterError as exc:
            outcome.refused.append(Refused(id=letter_id, reason=str(exc)))
    log.info("dead letters resent by %s: %d sent, %d gone, %d refused",
             by.key_id if by else "anonymous", len(outcome.sent), len(outcome.gone),
             len(outcome.refused))  # fmt: skip
    return outcome


@router.delete("/{letter_id}", status_code=204)
def drop_dead_letter(
    letter_id: str = IdPath, ctx: ApiContext = Depends(context), by: ApiKey | None = Depends(admin)
) -> Response:
    """Delete it for good."""
    if not _drop(ctx, letter_id):
        raise HTTPException(404, f"no dead letter {letter_id!r}")
    log.info("dead letter %s dropped by %s", letter_id, by.key_id if by else "anonymous")
    return Response(status_code=204)


def _found(ctx: ApiContext, letter_id: str) -> DeadLetter:
    try:
        letter = _letters(ctx).get(letter_id)
    except DeadLetterError as exc:
        raise HTTPException(404, str(exc)) from None
    if letter is None:
        raise HTTPException(404, f"no dead letter {letter_id!r}")
    return letter


def _drop(ctx: ApiContext, letter_id: str) -> bool:
    try:
        return _letters(ctx).drop(letter_id)
    except DeadLetterError as exc:
        raise HTTPException(404, str(exc)) from None
