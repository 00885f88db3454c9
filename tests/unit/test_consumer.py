"""The source's rewind, with an in-memory stand-in for librdkafka's consumer."""

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

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(self.error))
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001)) for tp in partitions]

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.partition, partition.offset))


def source(consumer: Consumer, metrics: Metrics) -> KafkaSource:
    kafka = KafkaSource({}, "in", lambda partitions: None, lambda partitions: None, metrics)
    kafka._consumer = cast(Any, consumer)
    kafka.assigned = {0, 1}
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
