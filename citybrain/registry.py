"""The RSUs an operator has registered: where they are and what they watch.

RSUs report without being registered (the registry of who reported lives with the state);
registering adds what only an operator knows, and is where bus credentials are issued.
"""

from __future__ import annotations

import orjson
import redis
from pydantic import Field

from citybrain.intersections import ID_PATTERN
from common.config import StrictModel

RSU_META_HASH = "cb:rsu_meta"


class RsuInfo(StrictModel):
    name: str | None = Field(None, max_length=200, description="human name, e.g. a street corner")
    lat: float | None = Field(None, ge=-90, le=90, description="WGS84 latitude of the RSU")
    lon: float | None = Field(None, ge=-180, le=180, description="WGS84 longitude")
    cameras: list[str] = Field(
        default_factory=list, max_length=32, description="camera ids this RSU runs"
    )
    intersection_id: str | None = Field(
        None, pattern=ID_PATTERN, description="the intersection it watches, if one"
    )


class RsuRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def put(self, rsu_id: str, info: RsuInfo) -> bool:
        return bool(self.client.hset(RSU_META_HASH, rsu_id, orjson.dumps(info.model_dump())))

    def get(self, rsu_id: str) -> RsuInfo | None:
        raw = self.client.hget(RSU_META_HASH, rsu_id)
        return RsuInfo.model_validate(orjson.loads(raw)) if raw else None

    def all(self) -> dict[str, RsuInfo]:
        return {
            (k.decode() if isinstance(k, bytes) else k): RsuInfo.model_validate(orjson.loads(v))
            for k, v in self.client.hgetall(RSU_META_HASH).items()
        }

    def delete(self, rsu_id: str) -> bool:
        return bool(self.client.hdel(RSU_META_HASH, rsu_id))
