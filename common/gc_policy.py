"""When Python's cyclic garbage collector runs, in processes with a latency budget.

By default the collector runs whenever net allocations pass a threshold: inside whatever
code happens to allocate, in whichever thread, so inside frames too. Counted over one run
of the RSU's side of benchmarks/rsu_latency.py (start-up, warm-up and 252 frames,
OpenVINO): 191 collections of the youngest generation (up to 0.4 ms each), 17 of the
middle one (up to 2.3 ms) and 2 of the whole heap, about 100,000 objects of the loaded
libraries, at 60-67 ms each.

Two remedies, for two kinds of process:

- :func:`collect_between_frames`: automatic collection off. The loop calls
  :func:`collect_due` after each frame is sent. The first call collects and then freezes
  the heap as it is once start-up is over (the models, sessions and libraries live as long
  as the process; no collection looks at them again). Later calls run the generation the
  interpreter's own thresholds say is due: between frames instead of inside one, and no
  less often than before.
- :func:`favour_throughput` (the ingest worker): freeze, and let the youngest generation
  grow large before it is collected. Validating a batch makes tens of thousands of
  short-lived objects, and with the default thresholds the collector rescanned the heap
  again and again: it made validation 5x slower.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_started = False  # collect_due has frozen the start-up heap


@contextmanager
def collect_between_frames() -> Iterator[None]:
    """Within: no automatic collection; :func:`collect_due` runs what is due."""
    global _started
    was_enabled = gc.isenabled()
    gc.disable()
    _started = False
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def collect_due() -> int | None:
    """Collect the oldest generation whose count passed its threshold, as the interpreter
    would have at its next allocation; the generation collected, or None. Does nothing
    while automatic collection is on (it has run whatever was due)."""
    global _started
    if gc.isenabled():
        return None
    if not _started:
        _started = True
        gc.collect()
        gc.freeze()
        return 2
    counts = gc.get_count()
    thresholds = gc.get_threshold()
    if counts[0] <= thresholds[0]:
        return None
    # The counts of the older generations are collections of the next younger one since
    # their own last collection.
    generation = 2 if counts[2] > thresholds[2] else 1 if counts[1] > thresholds[1] else 0
    gc.collect(generation)
    return generation


def favour_throughput() -> None:
    """Freeze the start-up heap; collect the youngest generation every 50,000 allocations."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
