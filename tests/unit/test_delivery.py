"""Each delivery mode's checkpoint order, with in-memory stand-ins for the source and sink."""

from typing import Any, cast

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import OutputsLost, Retriable
from streamer.kafka.delivery import Checkpoint, ExactlyOnce, checkpoint_for
from streamer.kafka.producer import Refusal
from streamer.settings import DeliverySettings


class RecordingSource:
    def __init__(self, assigned: set[int]) -> None:
        self.assigned = assigned
        self.commits: list[dict[int, int]] = []

    def commit(self, next_offsets: dict[int, int]) -> None:
        self.commits.append(dict(next_offsets))


class Sink:
    transactional = False

    def __init__(self, fail: bool = False, refused: list[Refusal] | None = None) -> None:
        self.fail = fail
        self.flushes = 0
        self.refused = refused or []

    def take_refused(self) -> list[Refusal]:
        refused, self.refused = self.refused, []
        return refused

    def flush(self, timeout_s: float) -> None:
        self.flushes += 1
        self.settled = self.epochs
        self.raise_failures()

    # A split checkpoint: epochs are numbered; `settled` says through which one every output
    # has its delivery report.
    epochs = settled = 0

    def cut(self) -> int:
        self.epochs += 1
        return self.epochs

    def settled_through(self, epoch: int) -> bool:
        return epoch <= self.settled

    def raise_failures(self) -> None:
        if self.fail:
            raise OutputsLost("1 outputs not delivered")


def checkpoint(source: RecordingSource, sink: Sink, on_refused: Any = None) -> Checkpoint:
    handler = on_refused or (lambda refused: None)
    mode = "exactly_once" if sink.transactional else "at_least_once"
    delivery = DeliverySettings(mode=mode, commit_interval_ms=1000, flush_timeout_s=1.0)
    return checkpoint_for(delivery, cast(Any, source), cast(Any, sink), handler)


def test_commits_next_offset_per_owned_partition_after_flush() -> None:
    source, sink = RecordingSource({0, 1}), Sink()
    cp = checkpoint(source, sink)
    cp.mark_processed(np.array([0, 0, 1, 2]), np.array([5, 6, 9, 3]))
    assert cp.commit({}) == {0: 7, 1: 10}  # partition 2 is not ours: never committed
    assert sink.flushes == 1
    assert source.commits == [{0: 7, 1: 10}]


def test_failed_flush_commits_nothing() -> None:
    source = RecordingSource({0})
    cp = checkpoint(source, Sink(fail=True))
    cp.mark_processed(np.array([0]), np.array([5]))
    with pytest.raises(OutputsLost):
        cp.commit({})
    assert source.commits == []


def test_commit_stops_at_pending_event_and_keeps_the_rest_for_later() -> None:
    source = RecordingSource({0})
    cp = checkpoint(source, Sink())
    cp.mark_processed(np.array([0]), np.array([11]))  # a dead letter ahead of pending offset 10
    assert cp.commit({0: 10}) == {0: 10}
    assert cp.commit({}) == {0: 12}


def test_forgotten_partitions_are_not_committed() -> None:
    source = RecordingSource({0, 1})
    cp = checkpoint(source, Sink())
    cp.mark_processed(np.array([0, 1]), np.array([1, 1]))
    cp.forget([1])
    assert cp.commit({}) == {0: 2}


def test_refused_outputs_are_handed_on_and_their_letters_flushed_before_the_commit() -> None:
    source = RecordingSource({0})
    refusal = Refusal("scored", b"k", b"v", "MSG_SIZE_TOO_LARGE")
    sink = Sink(refused=[refusal])
    handed: list[list[Refusal]] = []
    cp = checkpoint(source, sink, handed.append)
    cp.mark_processed(np.array([0]), np.array([3]))
    assert cp.commit({}) == {0: 4}  # a refusal is not a rewind: the offsets commit
    assert handed == [[refusal]]
    assert sink.flushes == 2  # the dead letters standing for the refused outputs are flushed first
    assert source.commits == [{0: 4}]


class FlakySource(RecordingSource):
    """Its next `failures` commits fail (as a broker going away mid-request does: the broker may
    or may not have taken them)."""

    def __init__(self, assigned: set[int], failures: int) -> None:
        super().__init__(assigned)
        self.failures = failures

    def commit(self, next_offsets: dict[int, int]) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        super().commit(next_offsets)


class State:
    """Records the order of snapshot writes and commit notices; a cut's snapshot is written in
    `chunks` steps, each logged."""

    def __init__(self, log: list[str], fail: bool = False, chunks: int = 1) -> None:
        self.log, self.fail, self.chunks = log, fail, chunks

    def persist(self, offsets: dict[int, int]) -> None:
        if self.fail:
            raise Retriable("redis down")
        self.log.append(f"persist {offsets}")

    def begin_persist(self, offsets: dict[int, int]) -> "Writing":
        return Writing(self, offsets)

    def committed(self) -> None:
        self.log.append("committed")


class Writing:
    def __init__(self, state: State, offsets: dict[int, int]) -> None:
        self.state, self.offsets, self.left = state, offsets, state.chunks

    def step(self) -> bool:
        if self.state.fail:
            raise Retriable("redis down")
        self.state.log.append(f"write {self.offsets}")
        self.left -= 1
        return self.left == 0


def test_the_state_snapshot_is_written_after_the_flush_and_before_the_commit() -> None:
    log: list[str] = []
    source = RecordingSource({0})
    cp = checkpoint(source, Sink())
    cp.state = State(log)
    cp.mark_processed(np.array([0]), np.array([4]))
    cp.commit({})
    assert log == ["persist {0: 5}", "committed"] and source.commits == [{0: 5}]


def test_a_snapshot_redis_cannot_take_commits_nothing() -> None:
    source = RecordingSource({0})
    cp = checkpoint(source, Sink())
    cp.state = State([], fail=True)
    cp.mark_processed(np.array([0]), np.array([4]))
    with pytest.raises(Retriable):
        cp.commit({})
    assert source.commits == []


def test_a_commit_that_failed_after_its_snapshot_is_committed_again_before_a_newer_snapshot() -> None:
    log: list[str] = []
    source = FlakySource({0}, failures=1)
    cp = checkpoint(source, Sink())
    cp.state = State(log)
    cp.mark_processed(np.array([0]), np.array([4]))
    with pytest.raises(Retriable):
        cp.commit({})
    cp.mark_processed(np.array([0]), np.array([9]))
    cp.commit({})
    assert source.commits == [{0: 5}, {0: 10}]
    assert log == ["persist {0: 5}", "committed", "persist {0: 10}", "committed"]


def cut_on_two_partitions(log: list[str], chunks: int = 1) -> tuple[RecordingSource, Sink, Checkpoint]:
    """An at-least-once checkpoint cut after events 4 and 7 of partitions 0 and 1 were done."""
    source, sink = RecordingSource({0, 1}), Sink()
    cp = checkpoint(source, sink)
    cp.state = State(log, chunks=chunks)
    cp.mark_processed(np.array([0, 1]), np.array([4, 7]))
    cp.advance({})
    return source, sink, cp


def test_a_cut_takes_the_snapshot_writes_it_on_later_steps_and_commits_once_the_outputs_before_it_are_acked() -> None:
    log: list[str] = []
    source, sink, cp = cut_on_two_partitions(log, chunks=2)
    assert log == [] and cp.cutting and cp.due()
    cp.mark_processed(np.array([0]), np.array([9]))  # scored after the cut: the next one's
    cp.advance({})
    assert log == ["write {0: 5, 1: 8}"] and source.commits == [] and sink.flushes == 0  # never waited
    sink.settled = 1  # acknowledged, but the snapshot is not all written yet
    cp.advance({})
    assert source.commits == [{0: 5, 1: 8}] and log[1:] == ["write {0: 5, 1: 8}", "committed"] and not cp.cutting
    cp.advance({})  # the next cut
    cp.advance({})
    assert log[-1] == "write {0: 10}"


def test_a_snapshot_redis_cannot_take_during_a_cut_commits_nothing_until_the_next_interval() -> None:
    log: list[str] = []
    source, sink, cp = cut_on_two_partitions(log)
    cast(State, cp.state).fail = True
    sink.settled = 1
    with pytest.raises(Retriable):
        cp.advance({})
    assert source.commits == [] and not cp.cutting and not cp.due()


def test_partitions_done_after_a_cut_are_committed_later_though_the_cut_did_not_hold_them() -> None:
    source, sink = RecordingSource({0, 1}), Sink()
    cp = checkpoint(source, sink)
    cp.mark_processed(np.array([0]), np.array([4]))
    cp.advance({})  # the cut holds partition 0 only
    cp.mark_processed(np.array([1]), np.array([6]))
    sink.settled = 1
    cp.advance({})
    assert cp.commit({}) == {1: 7}
    assert source.commits == [{0: 5}, {1: 7}]


def test_a_lost_output_before_the_cut_commits_nothing() -> None:
    source, sink = RecordingSource({0}), Sink()
    cp = checkpoint(source, sink)
    cp.mark_processed(np.array([0]), np.array([4]))
    cp.advance({})
    sink.fail, sink.settled = True, 1
    with pytest.raises(OutputsLost):
        cp.advance({})
    assert source.commits == []


def test_a_whole_commit_overtakes_a_cut_and_partitions_lost_meanwhile_are_left_out() -> None:
    log: list[str] = []
    source, sink, cp = cut_on_two_partitions(log)
    source.assigned.discard(1)
    cp.forget([1])
    sink.settled = 1
    cp.advance({})
    assert source.commits == [{0: 5}]
    cp.mark_processed(np.array([0]), np.array([6]))
    cp.advance({})
    cp.mark_processed(np.array([0]), np.array([8]))
    assert cp.commit({}) == {0: 9} and not cp.cutting  # a revoke or a shutdown does not wait for the cut
    assert source.commits == [{0: 5}, {0: 9}]
    assert log == ["write {0: 5}", "committed", "persist {0: 9}", "committed"]  # the cut at 7: never written


class TransactionalSink(Sink):
    """Records the transaction it is asked to commit; `registered`: whether a replaced producer
    has registered yet."""

    transactional = True

    def __init__(self, log: list[str], registered: bool = True) -> None:
        super().__init__()
        self.log, self.ready, self.aborts = log, registered, 0

    def commit_transaction(self, offsets: list[TopicPartition], group_metadata: object, timeout_s: float) -> None:
        self.log.append(f"transaction {[(tp.partition, tp.offset) for tp in offsets]}")

    def abort(self, timeout_s: float) -> None:
        self.aborts += 1

    def restart(self, timeout_s: float) -> bool:
        return self.ready


class TransactionalSource(RecordingSource):
    topic = "in"

    def group_metadata(self) -> object:
        return object()


def test_exactly_once_writes_the_snapshot_then_commits_outputs_and_offsets_in_one_transaction() -> None:
    log: list[str] = []
    source, sink = TransactionalSource({0, 1}), TransactionalSink(log)
    cp = checkpoint(source, sink)
    assert isinstance(cp, ExactlyOnce) and cp.transactional
    cp.state = State(log)
    cp.mark_processed(np.array([0, 1]), np.array([4, 7]))
    assert cp.commit({}) == {0: 5, 1: 8}
    assert log == ["persist {0: 5, 1: 8}", "transaction [(0, 5), (1, 8)]", "committed"]
    assert source.commits == [] and sink.flushes == 0  # the offsets went with the transaction


def test_at_least_once_may_leave_scored_work_pending_at_a_checkpoint() -> None:
    assert not checkpoint(RecordingSource({0}), Sink()).transactional


def test_a_rewind_forgets_the_offsets_and_waits_for_a_replaced_producer_to_register() -> None:
    sink = TransactionalSink([], registered=False)
    cp = checkpoint(TransactionalSource({0}), sink)
    cp.mark_processed(np.array([0]), np.array([4]))
    assert not cp.rewind() and sink.aborts == 1
    assert not cp.rewound()
    sink.ready = True
    assert cp.rewound()
    assert not cp.due()  # nothing since the last commit is left to commit
