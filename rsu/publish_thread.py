"""Publishing off the frame path: a sender thread owns the bus connection and the spool.

An RSU's Redis is in the traffic center, often across a WAN: a round trip of milliseconds
to tens of milliseconds.  Waiting for each XADD's reply in the camera loop would spend the
20 ms budget on the network.  So the camera loop only hands its messages over (a queue put,
microseconds), and one thread sends them, in order: whatever has queued up goes in one
pipelined round trip, so the thread keeps up whatever the round-trip time.  When the bus is
down, the thread spools and retries with back-off exactly as :class:`BusPublisher` does
(it runs one).  The queue is bounded: if the thread ever falls that far behind, the camera
loop waits (and counts it) rather than holding an unbounded backlog in memory.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.frame_codec import BusMessage
from common.gc_policy import collect_between_frames
from rsu.publisher import BusPublisher
from rsu.spool import Spool

log = logging.getLogger("rsu.publisher")

_STOP = object()

# The camera loop runs Python between its C calls (inference, OpenCV) for a few ms at a time.
# CPython makes a running thread give up the GIL every 5 ms (its default switch interval)
# when another thread wants it: the sender thread would then interrupt the loop mid-stage.
# At 50 ms the sender waits for the loop's next release of the GIL (every inference
# releases it).  Measured side by side (benchmarks/rsu_latency.py, OpenVINO, 4 rounds):
# overhead p99 4.34 ms at 5 ms, 3.80 at 20 ms, 3.55 at 50 ms.
CAMERA_LOOP_SWITCH_INTERVAL_S = 0.05


@contextmanager
def favour_camera_loop() -> Iterator[None]:
    """While the camera loop runs: let it keep the GIL between its own releases, and run the
    garbage collector between frames (the pipeline calls ``collect_due``), not inside them."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(CAMERA_LOOP_SWITCH_INTERVAL_S)
    try:
        with collect_between_frames():
            yield
    finally:
        sys.setswitchinterval(before)


class BackgroundPublisher:
    """The :class:`BusPublisher` interface, with ``send`` returning at once.  Only the sender
    thread touches the inner publisher (its connection and spool) once this starts."""

    def __init__(
        self,
        inner: BusPublisher,
        max_queued: int = 1024,
        on_ack: Callable[[float], None] | None = None,
    ) -> None:
        """``on_ack``: called by the sender thread with each batch's hand-over ->
        acknowledged time, in seconds (a Prometheus histogram's ``observe``)."""
        self.inner = inner
        self.on_ack = on_ack
        self.published = 0  # messages handed over
        self.queue_waits = 0  # sends that found the queue full and waited
        # hand-over -> acknowledged by the bus (or taken by the spool), ms, per batch
        self.ack_ms: deque[float] = deque(maxlen=10_000)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queued)
        self._error: Exception | None = None
        self._outstanding = 0  # batches handed over and not yet sent or spooled
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="bus-sender", daemon=True)
        self._thread.start()

    # What the pipeline and health read; the sender thread writes them.
    @property
    def connected(self) -> bool:
        return self.inner.connected

    @property
    def reconnects(self) -> int:
        return self.inner.reconnects

    @property
    def spool_depth(self) -> int:
        return self.inner.spool_depth

    @property
    def spool(self) -> Spool | None:
        return self.inner.spool

    @property
    def url(self) -> str:
        return self.inner.url

    def check(self) -> None:
        self.inner.check()  # before anything is sent: the thread has nothing to do yet

    def send(self, messages: list[BusMessage]) -> None:
        """Hand ``messages`` to the sender thread.  Raises what the sender met last time
        if it could not send nor spool (no spool configured, or a bug)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        self.published += len(messages)
        with self._done:
            self._outstanding += 1
        item = (time.perf_counter(), messages)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.queue_waits += 1
            self._queue.put(item)

    @property
    def queued(self) -> int:
        """Ticks handed over and not yet sent or spooled."""
        return self._outstanding

    def drain(self) -> bool:
        """True when nothing is waiting; the sender thread retries spooled messages itself."""
        return self._outstanding == 0 and self.spool_depth == 0

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything handed over is on the bus (True), or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._done:
            if not self._done.wait_for(lambda: self._outstanding == 0, timeout_s):
                return False
        while self.spool_depth:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        try:
            self._queue.put(_STOP, timeout=30)
        except queue.Full:  # the sender is stuck; what it holds is in the spool or lost
            log.error("bus sender did not take the stop request; closing anyway")
        self._thread.join(timeout=30)
        self.inner.close()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._retry_wait())
            except queue.Empty:
                try:
                    self.inner.drain()  # the bus may be back: re-send what was spooled
                except Exception as exc:  # keep the sender alive; the next wait retries
                    log.error("bus sender could not re-send the spool: %s", exc)
                continue
            items = [item]
            while True:  # everything queued goes in one round trip
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batches = [i for i in items if i is not _STOP]
            if batches:
                self._send(batches)  # type: ignore[arg-type]
            if len(batches) < len(items):
                return

    def _send(self, batches: list[tuple[float, list[BusMessage]]]) -> None:
        messages = [m for _, batch in batches for m in batch]
        try:
            self.inner.send(messages)
        except Exception as exc:  # no spool configured, or a bug: the camera loop raises it
            log.error("bus sender could not send or spool %d messages: %s", len(messages), exc)
            self._error = exc
        done = time.perf_counter()
        for handed, _ in batches:
            self.ack_ms.append((done - handed) * 1000.0)
            if self.on_ack is not None:
                self.on_ack(done - handed)
        with self._done:
            self._outstanding -= len(batches)
            self._done.notify_all()

    def _retry_wait(self) -> float | None:
        """How long to wait for new messages before retrying spooled ones (None: forever)."""
        if not self.spool_depth:
            return None
        return max(0.01, self.inner.retry_wait_s())


AnyPublisher = BusPublisher | BackgroundPublisher
