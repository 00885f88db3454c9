"""Keep Python's cyclic garbage collector off the scoring loop's critical path.

A loaded TensorFlow model leaves hundreds of thousands of long-lived objects on the Python heap.
Each full (generation 2) collection walks all of them: measured on the 2-core bench machine at
0.4-0.65 s per collection, the loop stalled, once or twice per 60k events when records carry
headers (a Python list and tuple per record are enough to trigger them). That was most of the
cost of reading headers for tracing, and a full collection is a p99 outlier by itself. Those
objects live as long as the model does, so once after start-up, and after the first batch of
each model swap, they are collected and then frozen (`gc.freeze`): the
collector no longer scans them, and only the batches' short-lived objects are collected.
Instagram's servers use the same call for the same reason.

The first generation's threshold is raised from 700 to YOUNG_THRESHOLD allocations. Objects freed
by reference counting leave the collector's lists at once, so a young collection only walks the
containers still alive: the batch in flight (a few per event: header lists and tuples, object
columns). With 700, a batch of 4,096 events is walked dozens of times while it is alive; with
20,000, a few times. Measured on the bench backlog with tracing on (a header list per event):
253 young collections (59 ms) and 22 middle ones (68 ms) per 60k events became 4 (35 ms), and
the cost of tracing fell from 22% to 6% of throughput. The largest single pause rose from 3-8 ms
to 12 ms, below one batch's cycle.

Each settle unfreezes first, so a model version dropped since the last one is not kept alive by
the permanent generation (TensorFlow objects are full of reference cycles, which only the
collector frees).
"""

from __future__ import annotations

import gc
import time

YOUNG_THRESHOLD = 20_000  # container allocations between young collections (CPython's default: 700)


def settle() -> float:
    """Collect all garbage, then freeze what survives; the seconds it took (one pause of the
    loop, after start-up or after the first batch of a model swap)."""
    started = time.perf_counter()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
