"""Shared fixtures: a real Valkey/Redis server on a free loopback port for the whole session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.redis_server import LocalRedisServer

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
# RSU spools of test runs go to a throw-away directory, never the user's state directory.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="v2x-test-state-")
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="v2x-test-cache-")  # fitted models

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedisServer]:
    server = LocalRedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """$POSTGRES_URL, or a throwaway server; skipped, saying why, where neither exists."""
    if os.environ.get("POSTGRES_URL"):
        yield os.environ["POSTGRES_URL"]
        return
    from common.postgres_server import LocalPostgresServer, PostgresUnavailableError

    try:
        server = LocalPostgresServer().start()
    except PostgresUnavailableError as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's server for each test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_server_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def api_client(config, role: str = "admin", client=None, history=None):  # -> TestClient
    """A TestClient of the API that sends a fresh API key of ``role``."""
    from fastapi.testclient import TestClient

    from citybrain.api import create_app
    from citybrain.auth import KeyStore, Role

    redis_client = client or redis.Redis.from_url(config.bus.redis_url)
    _, secret = KeyStore(redis_client).create(f"test {role}", Role.parse(role))
    app = create_app(config, redis_client, history=history)
    return TestClient(app, headers={"Authorization": f"Bearer {secret}"})
