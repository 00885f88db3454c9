"""Latency-bounded micro-batches, as TF Serving's batcher: a max size and a timeout.

A batch is ready when it holds `max_batch_size` events or its oldest event has waited
`max_wait`, counted from when it started waiting (in the consumer's queue, if the loop was
busy). The queue is bounded because the worker polls at most `room()` messages. Padding to
fixed sizes happens at the model (see `pipeline.padded_size`); the clock is injected for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from streamer.records import EventBatch


class MicroBatcher:
    def __init__(self, max_batch_size: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._chunks: list[EventBatch] = []
        self._pending = 0
        self._oldest_at: float | None = None

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
        """Time until the pending batch is due; None when nothing is pending."""
        if self._oldest_at is None:
            return None
        return max(self._oldest_at + self.max_wait_s - self.clock(), 0.0)

    def ready(self) -> bool:
        return self._pending >= self.max_batch_size or self.wait_s() == 0.0

    def take(self) -> EventBatch:
        """Up to `max_batch_size` of the oldest events; the rest keep their original deadline."""
        batch = EventBatch.concat(self._chunks)
        head, rest = batch.take(slice(0, self.max_batch_size)), batch.take(slice(self.max_batch_size, None))
        self._chunks = [rest] if len(rest) else []
        self._pending = len(rest)
        if not self._pending:
            self._oldest_at = None
        return head

    def clear(self) -> int:
        """Forget everything pending (a rewind will consume it again); returns how many."""
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
