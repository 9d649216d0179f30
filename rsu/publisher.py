"""Publishing an RSU's messages to the bus, one pipelined round trip per frame tick.

If the bus is unreachable, messages go to the :class:`~rsu.spool.Spool` and, once the bus is
back, are re-sent in their original order before anything newer.  While the bus is down,
reconnection is tried with exponential back-off, not on every frame, so an outage never
stalls the camera pipeline for longer than one failed connect.  A message whose XADD
succeeded but whose reply was lost is re-sent; the center de-duplicates it.
"""

from __future__ import annotations

import logging
import time

import redis

from common.bus import BusConfig, StreamProducer, connect, redact_url
from common.frame_codec import BusMessage, encode
from rsu.spool import Spool

log = logging.getLogger("rsu.publisher")
DRAIN_BATCH = 500


class PublishError(RuntimeError):
    pass


def refused_credentials(exc: Exception) -> bool:
    """A wrong password, or an ACL that does not allow this RSU's stream: a setup error,
    not an outage (the RSU still spools, so no data is lost while it is fixed)."""
    text = str(exc)
    return (
        isinstance(exc, redis.AuthenticationError) or "NOPERM" in text or ("No permissions" in text)
    )


class BusPublisher:
    def __init__(
        self,
        config: BusConfig,
        spool: Spool | None = None,
        client: redis.Redis | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
    ) -> None:
        self.config = config
        self.client = client or connect(
            config.redis_url, config.cluster, socket_connect_timeout=1.0, socket_timeout=2.0
        )
        self.producer = StreamProducer(self.client, config)
        self.spool = spool
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.published = 0  # messages handed to the bus or the spool
        self.reconnects = 0
        self.connected = True
        self._backoff = retry_initial_s
        self._retry_at = 0.0

    def check(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise PublishError(f"cannot reach Redis at {self.url}: {exc}") from None

    @property
    def spool_depth(self) -> int:
        return len(self.spool) if self.spool is not None else 0

    def send(self, messages: list[BusMessage]) -> None:
        payloads = [(m.rsu_id, encode(m)) for m in messages]
        self.published += len(payloads)
        if self.spool is not None and (len(self.spool) or not self.connected):
            self.spool.push(payloads)  # keep order: older spooled messages go first
            self.drain()
            return
        try:
            self.producer.publish(payloads)
        except redis.RedisError as exc:
            if self.spool is None:
                raise PublishError(f"publishing to {self.url} failed: {exc}") from None
            self.spool.push(payloads)
            self._went_down(exc)

    def drain(self, force: bool = False) -> bool:
        """Re-send spooled messages in order; True when the spool is empty."""
        if self.spool is None:
            return True
        if not force and not self.connected and time.monotonic() < self._retry_at:
            return False
        while len(self.spool):
            batch = self.spool.peek(DRAIN_BATCH)
            try:
                self.producer.publish([(rsu_id, payload) for _, rsu_id, payload in batch])
            except redis.RedisError as exc:
                self._went_down(exc)
                return False
            self.spool.delete_through(batch[-1][0])
        if not self.connected:
            self.connected = True
            self.reconnects += 1
            self._backoff = self.retry_initial_s
            log.warning("bus %s reachable again; spool drained", self.url)
        return True

    def flush(self, timeout_s: float) -> bool:
        """Try to empty the spool for up to ``timeout_s`` (shutdown, end of a replay)."""
        deadline = time.monotonic() + timeout_s
        while not self.drain(force=True):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self._backoff, max(0.0, deadline - time.monotonic())))
        return True

    @property
    def url(self) -> str:
        return redact_url(self.config.redis_url)

    def retry_wait_s(self) -> float:
        """Seconds until the next re-try of the bus is due (0 while it is reachable)."""
        return 0.0 if self.connected else max(0.0, self._retry_at - time.monotonic())

    def _went_down(self, exc: Exception) -> None:
        if self.connected:
            if refused_credentials(exc):
                log.error(
                    "bus %s refuses this RSU's credentials (%s); spooling. The center issues "
                    "them per RSU (POST /rsus/{rsu_id}/credentials): check bus.redis_url",
                    self.url, exc,
                )  # fmt: skip
            else:
                log.warning("bus %s unreachable (%s); spooling", self.url, exc)
        self.connected = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.retry_max_s)

    def close(self) -> None:
        self.client.close()
        if self.spool is not None:
            self.spool.close()
