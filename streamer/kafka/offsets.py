"""The checkpoint: which offsets are safe to commit, and the order in which that is done."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
from confluent_kafka import KafkaException, TopicPartition

from streamer.errors import Retriable
from streamer.kafka.consumer import KafkaSource
from streamer.kafka.producer import KafkaSink, Refusal

log = logging.getLogger(__name__)


class SnapshotState(Protocol):
    """State whose snapshot must be durable before the offsets it corresponds to commit."""

    def persist(self, offsets: dict[int, int]) -> None: ...

    def committed(self) -> None: ...


class Checkpoint:
    """Tracks the next offset to commit per partition whose outputs have been produced.

    `commit()` runs, in order:
      1. at least once: flush the producer; if any output was not acknowledged, raise
         `OutputsLost` and commit nothing. Outputs refused for good go to `on_refused` (which
         dead-letters them) and those letters are flushed too: rewinding cannot change a
         refusal;
      2. write the state snapshot tagged with the offsets about to commit (`state.persist`);
         if it fails, raise `Retriable` and commit nothing;
      3. at least once: commit, synchronously, the next offsets of partitions this member
         still owns, never past an event still pending in the batcher (a commit that failed
         after its snapshot was written is first committed again: the broker may hold it, so
         no newer snapshot may replace the one before it yet). Exactly once: send the
         offsets to the open transaction and commit it; on failure it is abandoned and
         `OutputsLost` raised;
      4. tell the state its snapshot is committed; forget what was committed, and the
         partitions no longer owned.
    A failed commit keeps its offsets for the next checkpoint; after `OutputsLost` the worker
    calls `clear()` and rewinds its consumer to the last committed offsets.
    """

    def __init__(
        self,
        source: KafkaSource,
        sink: KafkaSink,
        interval_s: float,
        flush_timeout_s: float,
        on_refused: Callable[[list[Refusal]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.sink = sink
        self.on_refused = on_refused
        self.interval_s = interval_s
        self.flush_timeout_s = flush_timeout_s
        self.clock = clock
        self.state: SnapshotState | None = None
        self._next_offsets: dict[int, int] = {}
        # Offsets whose commit failed after their state snapshot was written: the broker may have
        # taken them or not. They are committed again before any newer snapshot is written, so the
        # snapshot kept as committed is never older than what the broker may hold.
        self._unresolved: dict[int, int] = {}
        self._last_commit = clock()

    def mark_processed(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        """Record that outputs for these input records have been handed to the producer."""
        for partition in np.unique(partitions):
            highest = int(offsets[partitions == partition].max())
            key = int(partition)
            self._next_offsets[key] = max(self._next_offsets.get(key, 0), highest + 1)

    def due(self) -> bool:
        return bool(self._next_offsets) and self.clock() - self._last_commit >= self.interval_s

    def commit(self, pending: dict[int, int]) -> dict[int, int]:
        """`pending`: per partition, the lowest offset still waiting to be scored. A dead letter
        can be done before an earlier event of its partition; the commit stops at that event."""
        owned = {p: min(o, pending.get(p, o)) for p, o in self._next_offsets.items() if p in self.source.assigned}
        if self.sink.transactional:
            self._persist(owned)
            offsets = [TopicPartition(self.source.topic, p, o) for p, o in owned.items()]
            self.sink.commit_transaction(offsets, self.source.group_metadata(), self.flush_timeout_s)
        else:
            self.sink.flush(self.flush_timeout_s)
            refused = self.sink.take_refused()
            if refused:
                self.on_refused(refused)
                self.sink.flush(self.flush_timeout_s)
            if self._unresolved:
                self._commit_offsets({p: o for p, o in self._unresolved.items() if p in self.source.assigned})
                self._unresolved = {}
                self._committed_state()
            self._persist(owned)
            try:
                self._commit_offsets(owned)
            except Retriable:
                self._unresolved = owned
                raise
        self._committed_state()
        # Keep what the pending floor held back; drop partitions no longer owned.
        self._next_offsets = {p: o for p, o in self._next_offsets.items() if p in owned and owned[p] < o}
        self._last_commit = self.clock()
        return owned

    def _commit_offsets(self, offsets: dict[int, int]) -> None:
        try:
            self.source.commit(offsets)
        except KafkaException as exc:
            raise Retriable(f"commit failed: {exc.args[0].str()}") from exc

    def _committed_state(self) -> None:
        if self.state is not None:
            self.state.committed()

    def _persist(self, owned: dict[int, int]) -> None:
        if self.state is not None and owned:
            try:
                self.state.persist(owned)
            except Retriable:
                # Retried at the next interval, not on every loop step: while Redis is away each
                # attempt would flush the producer and end the batch overlap, for nothing.
                self._last_commit = self.clock()
                raise

    def clear(self) -> None:
        self._next_offsets.clear()
        self._unresolved.clear()  # the rewind reads the state at whichever offsets the broker holds

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop offsets of partitions lost without a chance to commit: the new owner replays them."""
        for partition in partitions:
            self._next_offsets.pop(partition, None)
            self._unresolved.pop(partition, None)
