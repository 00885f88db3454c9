"""Delivery strategies: which offsets are safe to commit, and the order in which outputs, the
state snapshot and the offsets are made durable, for each `delivery.mode`.

Both modes track, per partition this member owns, the next offset whose outputs have been
handed to the producer, never past an event still pending in the batcher. They differ in what
"safely written" means, so each owns its checkpoint order, what a rewind must undo, and
whether a checkpoint may leave scored-but-unproduced work behind:

- `AtLeastOnce`: outputs are durable once the producer acknowledged them; the offsets commit
  after that, in a separate call. A crash between the two replays events whose outputs exist.
- `ExactlyOnce`: outputs and offsets commit in one Kafka transaction; a failed one is
  abandoned (the producer replaced, which aborts it on the broker) and nothing of it is seen by
  read_committed consumers.

The state snapshot (`SnapshotState.persist`) is written, tagged with the offsets, before they
commit in both modes, and confirmed (`committed`) after: recovery reads the state at exactly the
committed offset. The worker picks one with `checkpoint_for`; nothing else branches on the mode.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
from confluent_kafka import KafkaException, TopicPartition

from streamer.errors import Retriable
from streamer.kafka.consumer import KafkaSource
from streamer.kafka.producer import Epoch, KafkaSink, Refusal
from streamer.settings import DeliverySettings

log = logging.getLogger(__name__)


class SnapshotWriting(Protocol):
    """A snapshot written over several loop steps."""

    def step(self) -> bool: ...


class SnapshotState(Protocol):
    """State whose snapshot must be durable before the offsets it corresponds to commit."""

    def persist(self, offsets: dict[int, int]) -> None: ...

    def begin_persist(self, offsets: dict[int, int]) -> SnapshotWriting | None: ...

    def committed(self) -> None: ...


class Checkpoint(ABC):
    """Offsets to commit, and one mode's way of committing them (see the module docstring).

    `commit()` raises `OutputsLost` when outputs since the last commit cannot be vouched for:
    the worker then calls `rewind()` and, until one of them says the producer may be used
    again, `rewound()` once per loop step; then it seeks back to the committed offsets.
    `Retriable`: nothing was committed, the offsets are kept for the next checkpoint.
    """

    # Whether outputs and offsets commit or abort together (one transaction). Then a checkpoint
    # first scores what the batcher holds (a transaction may hold no output beyond its offsets),
    # and outputs of partitions this member gives up must commit with their offsets before they
    # go, or be aborted: left in the open transaction, they would commit later without them and
    # the partitions' next owner would score those events again.
    transactional = False

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
        self._last_commit = clock()

    def mark_processed(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        """Record that outputs for these input records have been handed to the producer."""
        for partition in np.unique(partitions):
            highest = int(offsets[partitions == partition].max())
            key = int(partition)
            self._next_offsets[key] = max(self._next_offsets.get(key, 0), highest + 1)

    def due(self) -> bool:
        return bool(self._next_offsets) and self.clock() - self._last_commit >= self.interval_s

    @property
    def cutting(self) -> bool:
        """A checkpoint is under way (`advance`): its outputs are not all acknowledged yet."""
        return False

    def commit(self, pending: dict[int, int]) -> dict[int, int]:
        """A whole checkpoint now, waiting for it (a revoke, a shutdown, a transaction).
        `pending`: per partition, the lowest offset still waiting to be scored. A dead letter
        can be done before an earlier event of its partition; the commit stops at that event."""
        owned = self._owned(pending)
        self._write(owned)
        self._committed(owned)
        return owned

    def advance(self, pending: dict[int, int]) -> None:
        """One step of the checkpoint that is due, never waiting on the broker where the mode
        allows it; a mode that cannot split its checkpoint commits it whole."""
        self.commit(pending)

    def _owned(self, pending: dict[int, int]) -> dict[int, int]:
        return {p: min(o, pending.get(p, o)) for p, o in self._next_offsets.items() if p in self.source.assigned}

    def _committed(self, owned: dict[int, int]) -> None:
        if self.state is not None:
            self.state.committed()
        # Keep what the pending floor held back and what was done since the cut (partitions the
        # cut did not hold too); drop partitions no longer owned.
        self._next_offsets = {
            p: o for p, o in self._next_offsets.items() if p in self.source.assigned and owned.get(p, -1) < o
        }
        self._last_commit = self.clock()

    @abstractmethod
    def _write(self, owned: dict[int, int]) -> None:
        """Make the outputs, the state snapshot and `owned` durable, in this mode's order."""

    def _persist(self, owned: dict[int, int]) -> None:
        if self.state is not None and owned:
            with self._deferring():
                self.state.persist(owned)

    @contextmanager
    def _deferring(self) -> Iterator[None]:
        """A snapshot Redis did not take is retried at the next interval, not on every loop
        step: while Redis is away each attempt would flush the producer and end the batch
        overlap, for nothing."""
        try:
            yield
        except Retriable:
            self._last_commit = self.clock()
            raise

    def rewind(self) -> bool:
        """Forget everything since the last commit and drop what the producer holds of it; True
        if the producer may be used at once, else `rewound` is asked again on later steps."""
        self._next_offsets.clear()
        self.sink.abort(self.flush_timeout_s)
        return self.sink.ready

    def rewound(self) -> bool:
        """One bounded attempt to make the producer usable after `rewind`; True once it is."""
        return True

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop offsets of partitions lost without a chance to commit: the new owner replays them."""
        for partition in partitions:
            self._next_offsets.pop(partition, None)


class AtLeastOnce(Checkpoint):
    """Write the snapshot, then, once the outputs before it are acknowledged, commit the offsets.

    Between `commit` calls (revoke, shutdown) the checkpoint is split over loop steps, so the
    loop never waits for the broker's acknowledgements (tens of ms on a loaded machine, every
    interval): `advance` cuts it (takes the snapshot, starts a new epoch of outputs in the
    sink), and on later steps writes the snapshot a chunk per step, then, once the sink has a
    report for every output before the cut, commits the cut's offsets. The loop scores batches
    meanwhile; their offsets wait for the next cut. A whole `commit` overtakes a cut under way:
    what the cut wrote stays written, what it had not goes into the whole checkpoint's snapshot,
    and the newer offsets cover it (each entity keeps its last committed version beside it).

    A refused output (too large, against a topic policy) would be refused again after any
    rewind, so `on_refused` dead-letters it and those letters are flushed before the commit.
    A commit that failed after its snapshot was written may still have reached the broker: it
    is committed again before any newer snapshot is written, so the snapshot kept as committed
    is never older than what the broker may hold.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unresolved: dict[int, int] = {}
        self._cut: tuple[dict[int, int], Epoch] | None = None  # its offsets, the outputs before it
        self._writing: SnapshotWriting | None = None  # the cut's snapshot, a chunk per step

    @property
    def cutting(self) -> bool:
        return self._cut is not None

    def due(self) -> bool:
        return self.cutting or super().due()

    def advance(self, pending: dict[int, int]) -> None:
        if self._cut is None:
            owned = self._owned(pending)
            self._resolve_unresolved()
            if self.state is not None and owned:
                self._writing = self.state.begin_persist(owned)
            self._cut = (owned, self.sink.cut())
            return
        owned, epoch = self._cut
        if self._writing is not None:
            try:
                with self._deferring():
                    written = self._writing.step()
            except Retriable:
                self._cut = self._writing = None
                raise
            if not written:
                return
            self._writing = None
        if not self.sink.settled_through(epoch):
            return
        self._cut = None
        self._hand_on_refused()
        self.sink.raise_failures()
        self._commit_cut({p: o for p, o in owned.items() if p in self.source.assigned})
        self._committed(owned)

    def _write(self, owned: dict[int, int]) -> None:
        self._cut = self._writing = None  # overtaken (see the class docstring)
        self.sink.flush(self.flush_timeout_s)
        self._hand_on_refused()
        self._resolve_unresolved()
        self._persist(owned)
        self._commit_cut(owned)

    def _hand_on_refused(self) -> None:
        refused = self.sink.take_refused()
        if refused:
            self.on_refused(refused)
            self.sink.flush(self.flush_timeout_s)

    def _resolve_unresolved(self) -> None:
        if self._unresolved:
            self._commit_offsets({p: o for p, o in self._unresolved.items() if p in self.source.assigned})
            self._unresolved = {}
            if self.state is not None:
                self.state.committed()

    def _commit_cut(self, owned: dict[int, int]) -> None:
        try:
            self._commit_offsets(owned)
        except Retriable:
            self._unresolved = owned
            raise

    def _commit_offsets(self, offsets: dict[int, int]) -> None:
        try:
            self.source.commit(offsets)
        except KafkaException as exc:
            raise Retriable(f"commit failed: {exc.args[0].str()}") from exc

    def rewind(self) -> bool:
        self._unresolved.clear()  # the rewind reads the state at whichever offsets the broker holds
        self._cut = self._writing = None
        return super().rewind()

    def forget(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        super().forget(partitions)
        for partition in partitions:
            self._unresolved.pop(partition, None)
            if self._cut is not None:
                self._cut[0].pop(partition, None)


class ExactlyOnce(Checkpoint):
    """Write the snapshot, then commit outputs and offsets in one transaction. A refused output
    aborts the transaction; the sink dead-letters nothing itself (see `KafkaSink`)."""

    transactional = True

    def _write(self, owned: dict[int, int]) -> None:
        self._persist(owned)
        offsets = [TopicPartition(self.source.topic, p, o) for p, o in owned.items()]
        self.sink.commit_transaction(offsets, self.source.group_metadata(), self.flush_timeout_s)

    def rewound(self) -> bool:
        return self.sink.restart(self.flush_timeout_s)


def checkpoint_for(
    delivery: DeliverySettings,
    source: KafkaSource,
    sink: KafkaSink,
    on_refused: Callable[[list[Refusal]], None],
    clock: Callable[[], float] = time.monotonic,
) -> Checkpoint:
    """The checkpoint `delivery.mode` asks for; `sink` must be transactional exactly then."""
    strategy = ExactlyOnce if delivery.mode == "exactly_once" else AtLeastOnce
    assert sink.transactional == strategy.transactional, "KafkaSink(transactional=...) must follow delivery.mode"
    return strategy(source, sink, delivery.commit_interval_ms / 1000, delivery.flush_timeout_s, on_refused, clock)
