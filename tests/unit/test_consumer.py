"""The source's rewind and re-seat, with an in-memory stand-in for librdkafka's consumer."""

from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from streamer.errors import Retriable
from streamer.kafka.consumer import KafkaSource
from streamer.metrics import Metrics


class Consumer:
    """committed() fails with `error` `failures` times, as a restarted broker's coordinator does
    while it loads; then answers with `offsets`."""

    def __init__(self, failures: int, error: int, offsets: dict[int, int]) -> None:
        self.failures, self.error, self.offsets = failures, error, offsets
        self.seeks: list[tuple[int, int]] = []
        self.delivered: list[list[Message]] = []  # what each consume() returns, in turn
        self.assignment: dict[int, int] = {}
        self.paused: set[int] = set()
        self.known: set[int] = set()  # ever assigned: librdkafka has a pause flag only for these
        self.assigned_by_callback = False

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(self.error))
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001)) for tp in partitions]

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.partition, partition.offset))

    def consume(self, num_messages: int, timeout: float) -> list["Message"]:
        return self.delivered.pop(0) if self.delivered else []

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # as librdkafka does, a partition's pause flag outlives its assignment
            del self.assignment[tp.partition]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            assert tp.partition not in self.assignment, "librdkafka refuses a partition assigned twice"
            self.assignment[tp.partition] = tp.offset
            self.known.add(tp.partition)
        self.assigned_by_callback = True

    def rebalance_assign(self, kafka: KafkaSource, partitions: list[TopicPartition]) -> None:
        """As confluent-kafka does: the on_assign callback, then the assignment, unless the
        callback made it itself."""
        self.assigned_by_callback = False
        kafka._assigned(cast(Any, self), partitions)
        if not self.assigned_by_callback:
            self.incremental_assign(partitions)

    def pause(self, partitions: list[TopicPartition]) -> None:
        known = self.known | self.assignment.keys()  # a pause before the first assignment is lost
        self.paused.update(tp.partition for tp in partitions if tp.partition in known)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in partitions)


class Message:
    """A record of `partition`, or, with `error`, a consumer error event (no partition)."""

    def __init__(self, partition: int = -1, error: int | None = None) -> None:
        self._partition, self._error = partition, error

    def error(self) -> KafkaError | None:
        return None if self._error is None else KafkaError(self._error)

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return 0

    def key(self) -> bytes:
        return b""

    def value(self) -> bytes:
        return b""


def source(consumer: Consumer, metrics: Metrics, partitions: tuple[int, ...] = (0, 1)) -> KafkaSource:
    config = {"auto.offset.reset": "earliest", "partition.assignment.strategy": "cooperative-sticky"}
    kafka = KafkaSource(config, "in", lambda partitions: None, lambda partitions: None, metrics)
    kafka._consumer = cast(Any, consumer)
    consumer.assignment = dict.fromkeys(partitions, -1001)  # as librdkafka's rebalance assigned them
    kafka._assigned(cast(Any, consumer), [TopicPartition("in", p) for p in partitions])
    return kafka


def test_rewind_is_one_bounded_attempt_the_worker_repeats_while_the_coordinator_loads() -> None:
    consumer = Consumer(3, KafkaError._TIMED_OUT, {0: 42})
    kafka = source(consumer, Metrics.create())
    for _ in range(3):  # each attempt waits COMMITTED_TIMEOUT_S at most; the loop polls in between
        with pytest.raises(Retriable):
            kafka.rewind()
    kafka.rewind()
    assert consumer.seeks == [(0, 42), (1, OFFSET_BEGINNING)]  # no commit yet: from the beginning


def test_rewind_does_not_retry_what_waiting_cannot_fix() -> None:
    consumer = Consumer(1, KafkaError.GROUP_AUTHORIZATION_FAILED, {})
    with pytest.raises(KafkaException):
        source(consumer, Metrics.create()).rewind()
    assert consumer.seeks == []


def test_a_failed_offset_fetch_seats_the_partitions_that_gave_nothing_at_their_committed_offsets() -> None:
    """librdkafka#5586: after a group-level NOT_COORDINATOR on the OffsetFetch of an assignment,
    its partitions would never be fetched."""
    consumer = Consumer(0, 0, {0: 42, 1: 7})
    kafka = source(consumer, Metrics.create(), partitions=(0, 1, 2))
    consumer.delivered = [[Message(1)], [Message(error=KafkaError.NOT_COORDINATOR)]]
    kafka.pause()
    assert len(kafka.poll(10, 0.1)) == 1  # partition 1 is fetched: it keeps its position
    assert len(kafka.poll(10, 0.1)) == 0
    assert consumer.assignment == {0: -1001, 1: -1001, 2: -1001}  # seated on the next poll, not in this one
    kafka.poll(10, 0.1)
    assert consumer.assignment == {0: 42, 1: -1001, 2: OFFSET_BEGINNING}  # 2: no commit, auto.offset.reset
    assert consumer.paused == {0, 1, 2}  # all still paused, as the worker left them


def test_the_seat_waits_for_the_coordinator_and_is_tried_again_on_later_polls() -> None:
    consumer = Consumer(2, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, {0: 5})
    kafka = source(consumer, Metrics.create(), partitions=(0,))
    consumer.delivered = [[Message(error=KafkaError.NOT_COORDINATOR)]]
    for _ in range(3):  # the error, then two polls whose committed() fails: nothing seated, no raise
        kafka.poll(10, 0.1)
        assert consumer.assignment == {0: -1001}
    kafka.poll(10, 0.1)
    assert consumer.assignment == {0: 5}
    kafka.poll(10, 0.1)  # seated once: nothing more to do
    assert consumer.assignment == {0: 5}


def test_errors_of_records_or_partitions_that_gave_messages_seat_nothing() -> None:
    consumer = Consumer(0, 0, {0: 3})
    kafka = source(consumer, Metrics.create(), partitions=(0,))
    consumer.delivered = [
        [Message(0)],  # partition 0 gave a record: it has a position, whatever fails later
        [Message(error=KafkaError.NOT_COORDINATOR)],
        [Message(error=KafkaError._MSG_TIMED_OUT)],
    ]
    for _ in range(4):
        kafka.poll(10, 0.1)
    assert consumer.assignment == {0: -1001}


def test_partitions_revoked_while_paused_come_back_fetchable() -> None:
    """A rewind pauses input; a rebalance then revokes some partitions and, later, assigns them
    back. librdkafka would keep them paused (resume() reaches only what is assigned at the time):
    in the chaos test they were never fetched again and their events never scored."""
    consumer = Consumer(0, 0, {})
    kafka = source(consumer, Metrics.create(), partitions=(0, 1, 2, 3))
    kafka.pause()
    revoked = [TopicPartition("in", p) for p in (0, 1)]
    kafka._revoked(cast(Any, consumer), revoked)
    consumer.incremental_unassign(revoked)  # what the client does once the callback returns
    kafka.resume()
    assert consumer.paused == set()
    consumer.rebalance_assign(kafka, revoked)
    assert consumer.paused == set() and kafka.assigned == {0, 1, 2, 3}


def test_partitions_assigned_while_paused_stay_paused_until_input_resumes() -> None:
    """Backpressure or a rewind pauses input; a member leaving the group then hands this one
    more partitions. Fetched at once, they would bypass the pause: outputs would keep piling up,
    or records would be read ahead of the rewind's seek."""
    consumer = Consumer(0, 0, {})
    kafka = source(consumer, Metrics.create(), partitions=(0, 1))
    kafka.pause()
    consumer.rebalance_assign(kafka, [TopicPartition("in", p) for p in (2, 3)])
    assert consumer.assignment.keys() == {0, 1, 2, 3}  # assigned once, by the callback
    assert consumer.paused == {0, 1, 2, 3}
    kafka.resume()
    assert consumer.paused == set()


def test_partitions_assigned_while_running_are_left_to_the_client() -> None:
    consumer = Consumer(0, 0, {})
    kafka = source(consumer, Metrics.create(), partitions=(0,))
    consumer.rebalance_assign(kafka, [TopicPartition("in", 1)])
    assert consumer.assignment.keys() == {0, 1} and consumer.paused == set()
