"""Latency-bounded micro-batches, as TF Serving's batcher: a max size and a timeout, and
optionally a latency target the batcher keeps from measured costs.

A batch is ready when it holds `max_batch_size` events or its oldest event has waited
`max_wait`, counted from when it started waiting (in the consumer's queue, if the loop was
busy). The queue is bounded because the worker polls at most `room()` messages. Padding to
fixed sizes happens at the model (see `pipeline.padded_size`); the clock is injected for tests.

With a target (`batching.target_latency_ms`), what a batch costs from `take()` to `finished()`
(features, model, encode, produce, and the wait behind the batch before) is learnt online as
fixed + per-event seconds (`BatchCost`), and the batch is cut earlier, and smaller, so that the
oldest event's wait plus that cost stays under the target. Hand tuning `max_wait_ms` cannot do
this: the right wait depends on the rate and on the machine. When even one event cannot make
the target (the oldest has already waited too long: the worker is past the rate it can serve
at that latency), the two bounds alone decide again, trading latency for throughput so the
queue drains, and each batch that ends past the target is counted. The two bounds always hold.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from streamer.records import EventBatch


class BatchCost:
    """Seconds a batch of n events costs, as fixed + per_event * n: a least-squares line through
    exponentially weighted moments of the observed (n, seconds), so it follows a machine whose
    load changes (the weight of a batch halves about every 14 batches at `smoothing` 0.05)."""

    def __init__(self, smoothing: float = 0.05) -> None:
        self.smoothing = smoothing
        self.fixed_s = 0.0
        self.per_event_s = 0.0
        self.observed = 0
        self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, n: int, seconds: float) -> None:
        self.observed += 1
        weight = max(self.smoothing, 1 / self.observed)  # the first batches count alike: no bias to zero
        self._n += weight * (n - self._n)
        self._t += weight * (seconds - self._t)
        self._nn += weight * (n * n - self._nn)
        self._nt += weight * (n * seconds - self._nt)
        spread = self._nn - self._n**2
        if spread > (0.05 * self._n) ** 2:  # sizes that barely vary say nothing of the slope: keep it
            self.per_event_s = max((self._nt - self._n * self._t) / spread, 0.0)
        self.fixed_s = self._t - self.per_event_s * self._n
        if self.fixed_s < 0:  # noise steeper than the data: all of it per event
            self.fixed_s, self.per_event_s = 0.0, self._t / max(self._n, 1.0)

    def predict(self, n: int) -> float:
        return self.fixed_s + self.per_event_s * n

    def fitting(self, budget_s: float, most: int) -> int:
        """The most events (≤ `most`) a batch can hold and still cost at most `budget_s`."""
        if budget_s < self.fixed_s:
            return 0
        if self.per_event_s <= 0:
            return most
        return min(most, math.floor((budget_s - self.fixed_s) / self.per_event_s + 1e-9))  # + rounding slack


@dataclass(frozen=True)
class _Taken:
    oldest_at: float
    taken_at: float
    size: int


class MicroBatcher:
    def __init__(
        self,
        max_batch_size: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        target_s: float | None = None,
        on_miss: Callable[[], object] = lambda: None,
    ) -> None:
        """`target_s`: the latency target (None: the two bounds alone); `on_miss` is called for
        each batch finished past it."""
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.target_s = target_s
        self.on_miss = on_miss
        self.cost = BatchCost()
        self._chunks: list[EventBatch] = []
        self._pending = 0
        self._oldest_at: float | None = None
        self._taken: deque[_Taken] = deque()  # taken, not yet finished: in order, at most two

    def __len__(self) -> int:
        return self._pending

    def room(self) -> int:
        return max(self.max_batch_size - self._pending, 0)

    def add(self, events: EventBatch, waiting_since: float | None = None) -> None:
        """`waiting_since`: when these events started waiting, if before now (they sat in the
        consumer's queue); the batch is due `max_wait` after that."""
        if not len(events):
            return
        if self._oldest_at is None:
            now = self.clock()
            self._oldest_at = now if waiting_since is None else min(waiting_since, now)
        self._chunks.append(events)
        self._pending += len(events)

    def wait_s(self) -> float | None:
        """Time until the pending batch is due; None when nothing is pending. With a target, due
        when waiting longer would leave less than the pending batch's predicted cost; once the
        oldest event is late anyway, `max_wait` alone (company for it is throughput)."""
        if self._oldest_at is None:
            return None
        due = self._oldest_at + self.max_wait_s
        if self.target_s is not None and self._fitting():
            due = min(due, self._oldest_at + self.target_s - self.cost.predict(self._pending))
        return max(due - self.clock(), 0.0)

    def limit(self) -> int:
        """How many events the next batch takes: with a target, the most whose predicted cost
        still lets the oldest pending event finish within it; all (up to `max_batch_size`) when
        not even one would, or when there is no target."""
        return self._fitting() or self.max_batch_size

    def _fitting(self) -> int:
        """With a target and events pending, how many events the oldest one's remaining budget
        allows (0: it is late already); 0 without either."""
        if self.target_s is None or self._oldest_at is None:
            return 0
        return self.cost.fitting(self._oldest_at + self.target_s - self.clock(), self.max_batch_size)

    def ready(self) -> bool:
        return self._pending >= self.limit() or self.wait_s() == 0.0

    def take(self) -> EventBatch:
        """Up to `limit()` of the oldest events; the rest keep their original deadline."""
        assert self._oldest_at is not None, "take() with nothing pending"
        size = self.limit()
        self._taken.append(_Taken(self._oldest_at, self.clock(), min(size, self._pending)))
        batch = EventBatch.concat(self._chunks)
        head, rest = batch.take(slice(0, size)), batch.take(slice(size, None))
        self._chunks = [rest] if len(rest) else []
        self._pending = len(rest)
        if not self._pending:
            self._oldest_at = None
        return head

    def finished(self, measured: bool = True) -> None:
        """The oldest taken batch is done (its outputs produced): its cost from `take()` teaches
        the estimate, and a batch whose oldest event took longer than the target is a miss.
        `measured=False` for a batch dropped unscored (its partitions were lost)."""
        if not self._taken:
            return
        taken, now = self._taken.popleft(), self.clock()
        if not measured:
            return
        self.cost.observe(taken.size, now - taken.taken_at)
        if self.target_s is not None and now - taken.oldest_at > self.target_s:
            self.on_miss()

    def clear(self) -> int:
        """Forget everything pending and taken (a rewind will consume it again); returns how many
        were pending."""
        self._taken.clear()
        return self.drop_partitions({int(p) for c in self._chunks for p in np.unique(c.partitions)})

    def lowest_pending_offsets(self) -> dict[int, int]:
        """Per partition, the first offset not yet scored: commits must not pass it."""
        lowest: dict[int, int] = {}
        for chunk in self._chunks:
            for partition in np.unique(chunk.partitions):
                first = int(chunk.offsets[chunk.partitions == partition].min())
                lowest[int(partition)] = min(lowest.get(int(partition), first), first)
        return lowest

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget pending events of revoked partitions: uncommitted, the new owner replays them."""
        revoked = np.fromiter(partitions, dtype=np.int64)
        kept = [c.take(~np.isin(c.partitions, revoked)) for c in self._chunks]
        self._chunks = [c for c in kept if len(c)]
        dropped = self._pending - sum(len(c) for c in self._chunks)
        self._pending -= dropped
        if not self._pending:
            self._oldest_at = None
        return dropped
