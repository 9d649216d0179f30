"""Assembling the API: context, error handlers, routers."""

from __future__ import annotations

import redis
from fastapi import FastAPI

from citybrain.api import (
    dead_letters,
    forecasts,
    intersections,
    keys,
    problems,
    routes,
    rsus,
    service,
    signals,
)
from citybrain.api.context import ApiContext
from citybrain.auth import KeyStore
from citybrain.config import CitybrainConfig
from citybrain.history import HistoryStore, open_history
from citybrain.intersections import IntersectionStore
from citybrain.registry import RsuRegistry
from citybrain.state import TrafficState
from common.bus import connect

DESCRIPTION = """\
Live state, counts and history of roadside units (RSUs) and the intersections they watch,
ingested from Redis Streams.

**Auth.** Every route but `/health` and `/metrics` needs an API key, sent as
`Authorization: Bearer cbk_...` (or `X-API-Key`). Roles: *viewer* reads, *operator* also
registers RSUs and intersections, *admin* also manages keys. Make the first admin key with
`citybrain keys create --role admin --name NAME`.

**Errors** are `application/problem+json` (RFC 9457), with a `detail` naming what is wrong.
"""


def create_app(
    config: CitybrainConfig,
    client: redis.Redis | None = None,
    history: HistoryStore | None = None,
) -> FastAPI:
    client = client or connect(config.bus.redis_url, config.bus.cluster)
    if history is None and config.history.enabled:
        history = open_history(config.history.url)
    app = FastAPI(
        title="citybrain traffic-center API",
        version="0.2.0",
        description=DESCRIPTION,
        responses=problems.PROBLEM_RESPONSES,
    )
    app.state.context = ApiContext(
        config=config,
        client=client,
        state=TrafficState(client, config),
        keys=KeyStore(client),
        intersections=IntersectionStore(client),
        registry=RsuRegistry(client),
        history=history,
    )
    problems.install(app)
    for module in (service, rsus, intersections, signals, forecasts, routes, dead_letters, keys):
        app.include_router(module.router)
    app.include_router(signals.audit_router)
    return app
