"""What every route needs (config, stores), and the role check each route declares."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from citybrain.auth import ApiKey, KeyStore, Role
from citybrain.config import CitybrainConfig
from citybrain.history import HistoryStore
from citybrain.intersections import IntersectionStore
from citybrain.registry import RsuRegistry
from citybrain.state import TrafficState

log = logging.getLogger("citybrain.api.auth")


@dataclass
class ApiContext:
    config: CitybrainConfig
    client: redis.Redis
    state: TrafficState
    keys: KeyStore
    intersections: IntersectionStore
    registry: RsuRegistry
    history: HistoryStore | None
    health_cache: tuple[float, Any] | None = None  # (monotonic time, HealthReport)
    routing: Any = None  # RoutingService, built on the first /routes request


def context(request: Request) -> ApiContext:
    return request.app.state.context  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer cbk_...")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: cbk_...")


def require(role: Role) -> Callable[..., ApiKey | None]:
    """A dependency: the request's API key, which must hold ``role`` or a higher one."""

    def check(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        header: str | None = Depends(_header),
        ctx: ApiContext = Depends(context),
    ) -> ApiKey | None:
        if not ctx.config.api.auth:
            return None
        presented = bearer.credentials if bearer else header
        client = request.client.host if request.client else "?"
        if not presented:
            log.warning("401 %s %s from %s: no API key", request.method, request.url.path, client)
            raise HTTPException(401, "an API key is required (Authorization: Bearer cbk_...)")
        key = ctx.keys.verify(presented)
        if key is None:
            key_id = presented.split("_")[1] if presented.count("_") >= 2 else "?"
            log.warning(
                "401 %s %s from %s: invalid API key (id %s)",
                request.method, request.url.path, client, key_id[:16],
            )  # fmt: skip
            raise HTTPException(401, "invalid or revoked API key")
        if key.role < role:
            log.warning(
                "403 %s %s from %s: key %s (%s) lacks role %s",
                request.method, request.url.path, client, key.key_id, key.role.name, role.name,
            )  # fmt: skip
            raise HTTPException(403, f"this needs the {role.name} role; the key is {key.role.name}")
        return key

    return check


viewer = require(Role.viewer)
operator = require(Role.operator)
admin = require(Role.admin)
