"""Publishing an RSU's messages to the bus, one pipelined round trip per frame tick."""

from __future__ import annotations

import redis

from common.bus import BusConfig, StreamProducer, connect
from common.schemas import FrameObjects, LaneAggregates, RsuHealth, encode_message


class PublishError(RuntimeError):
    pass


class BusPublisher:
    def __init__(self, config: BusConfig, client: redis.Redis | None = None) -> None:
        self.config = config
        self.client = client or connect(config.redis_url)
        self.producer = StreamProducer(self.client, config)
        self.published = 0

    def check(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise PublishError(f"cannot reach Redis at {self.config.redis_url}: {exc}") from None

    def send(self, messages: list[FrameObjects | LaneAggregates | RsuHealth]) -> None:
        try:
            self.producer.publish([(m.rsu_id, encode_message(m)) for m in messages])
        except redis.RedisError as exc:
            raise PublishError(f"publishing to {self.config.redis_url} failed: {exc}") from None
        self.published += len(messages)

    def close(self) -> None:
        self.client.close()
