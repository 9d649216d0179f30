"""API keys with roles (viewer < operator < admin), stored hashed in Redis.

A key reads ``cbk_<key id>_<secret>``.  Only the SHA-256 of the whole key is stored, under its
id; the secret is shown once, when the key is made.  The secret has 256 random bits, so a
plain SHA-256 is enough: there is no password to guess, and a leaked hash cannot be turned
back into a key.  Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum

import orjson
import redis

KEYS_HASH = "cb:apikeys"
PREFIX = "cbk"


class Role(IntEnum):
    viewer = 1  # reads
    operator = 2  # reads, and changes what the center knows: RSUs, intersections
    admin = 3  # everything, and API keys

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"role must be one of {[r.name for r in cls]}, got {name!r}") from None


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    created_ms: int


class KeyStore:
    def __init__(self, client: redis.Redis, cache_s: float = 5.0) -> None:
        self.client = client
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, dict | None]] = {}

    def create(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key; returns it and the secret key string, which is not kept anywhere."""
        key_id = secrets.token_hex(6)
        secret = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = {
            "name": name,
            "role": role.name,
            "sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "created_ms": int(time.time() * 1000),
        }
        self.client.hset(KEYS_HASH, key_id, orjson.dumps(record))
        return ApiKey(key_id, name, role, record["created_ms"]), secret

    def _record(self, key_id: str) -> dict | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached and now - cached[0] < self.cache_s:
            return cached[1]
        raw = self.client.hget(KEYS_HASH, key_id)
        record = orjson.loads(raw) if raw else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record

    def verify(self, presented: str) -> ApiKey | None:
        """The key a request presented, if it is a valid, current key."""
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        record = self._record(parts[1])
        if record is None:
            return None
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if not hmac.compare_digest(digest, record["sha256"]):
            return None
        return ApiKey(parts[1], record["name"], Role[record["role"]], record["created_ms"])

    def list(self) -> list[ApiKey]:
        out = []
        for key_id, raw in sorted(self.client.hgetall(KEYS_HASH).items()):
            record = orjson.loads(raw)
            kid = key_id.decode() if isinstance(key_id, bytes) else key_id
            out.append(ApiKey(kid, record["name"], Role[record["role"]], record["created_ms"]))
        return out

    def revoke(self, key_id: str) -> bool:
        self._cache.pop(key_id, None)
        return bool(self.client.hdel(KEYS_HASH, key_id))
