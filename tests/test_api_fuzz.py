"""Schemathesis against the API's own OpenAPI spec: no generated request gets a 5xx."""

from __future__ import annotations

import atexit
import shutil
import tempfile

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings

from citybrain.api import create_app
from citybrain.auth import KeyStore, Role
from citybrain.config import CitybrainConfig
from common.datadir import resolve_asset
from common.redis_server import LocalRedisServer

SERVER = LocalRedisServer()
STATE_DIR = tempfile.mkdtemp(prefix="v2x-fuzz-")
# Started at import, so also stopped at exit: a run that deselects every test here (-k)
# still imports this module, and the module fixture below would never run.
atexit.register(shutil.rmtree, STATE_DIR, ignore_errors=True)
atexit.register(SERVER.stop)


def _app():  # built at import: schemathesis reads the schema to make its tests
    SERVER.start()
    config = CitybrainConfig.model_validate(
        {
            "bus": {"redis_url": SERVER.url},
            "history": {"url": f"sqlite:///{STATE_DIR}/h.db"},
            # A real road graph, so that /routes is fuzzed for real.
            "routing": {"graph": str(resolve_asset("sumo/resco/ingolstadt1/ingolstadt1.net.xml"))},
        }
    )
    client = redis.Redis.from_url(SERVER.url)
    _, secret = KeyStore(client).create("fuzz", Role.admin)
    return create_app(config, client), secret


APP, ADMIN = _app()
# The live feed streams until the client leaves; it has its own test (test_api_center).
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path_regex=r".*/feed$")


@pytest.fixture(scope="module", autouse=True)
def _stop_server():
    yield
    SERVER.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case) -> None:
    for headers in ({"Authorization": f"Bearer {ADMIN}"}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            content_type = response.headers["content-type"]  # schemathesis: a list of values
            assert "application/problem+json" in str(content_type), (
                case.formatted_path,
                content_type,
            )
