"""API key administration (admin role)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Path, Response

from citybrain.api.context import ApiContext, admin, context
from citybrain.api.models import KeyOut, KeyRequest, NewKey, dt_of
from citybrain.auth import ApiKey, Role

router = APIRouter(prefix="/admin/keys", tags=["admin"])
log = logging.getLogger("citybrain.api.auth")


@router.get("", response_model=list[KeyOut], dependencies=[Depends(admin)])
def list_keys(ctx: ApiContext = Depends(context)) -> list[KeyOut]:
    """Every key: id, name and role; never the secret, which is not stored."""
    return [
        KeyOut(key_id=k.key_id, name=k.name, role=k.role.name, created=dt_of(k.created_ms))
        for k in ctx.keys.list()
    ]


@router.post("", response_model=NewKey, status_code=201)
def create_key(
    body: KeyRequest, ctx: ApiContext = Depends(context), by: ApiKey | None = Depends(admin)
) -> NewKey:
    key, secret = ctx.keys.create(body.name, Role.parse(body.role))
    log.info("key %s (%s, %s) created by %s", key.key_id, key.name, key.role.name,
             by.key_id if by else "anonymous")  # fmt: skip
    return NewKey(
        key_id=key.key_id, name=key.name, role=key.role.name, created=dt_of(key.created_ms),
        key=secret,
    )  # fmt: skip


@router.delete("/{key_id}", status_code=204)
def revoke_key(
    key_id: str = Path(pattern=r"^[0-9a-f]{1,32}$"),
    ctx: ApiContext = Depends(context),
    by: ApiKey | None = Depends(admin),
) -> Response:
    """Revoke a key. Other API processes may accept it for up to 5 s more (their cache)."""
    if not ctx.keys.revoke(key_id):
        raise HTTPException(404, f"no key {key_id!r}")
    log.info("key %s revoked by %s", key_id, by.key_id if by else "anonymous")
    return Response(status_code=204)
