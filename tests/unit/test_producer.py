"""How the sink tells a refusal (resending cannot help) from a failure (a rewind can)."""

import pytest
from confluent_kafka import KafkaError

from streamer.errors import Fatal, OutputsLost
from streamer.kafka.producer import RECORD_OVERHEAD, KafkaSink
from streamer.metrics import Metrics


class Message:
    def topic(self) -> str:
        return "scored"

    def partition(self) -> int:
        return 0

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


def sink() -> KafkaSink:
    return KafkaSink({"bootstrap.servers": "127.0.0.1:1"}, Metrics.create())


def test_a_record_refused_for_good_is_handed_on_not_rewound() -> None:
    out = sink()
    out._on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Message())
    out.flush(1.0)  # no OutputsLost: a rewind would meet the same refusal
    (refusal,) = out.take_refused()
    assert (refusal.topic, refusal.key, refusal.value, refusal.error) == ("scored", b"k", b"v", "MSG_SIZE_TOO_LARGE")
    assert out.take_refused() == []


def test_a_lost_delivery_is_a_rewind() -> None:
    out = sink()
    out._on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), Message())
    with pytest.raises(OutputsLost):
        out.flush(1.0)


def test_an_access_refusal_stops_the_worker_with_the_topic_named() -> None:
    out = sink()
    out._on_delivery(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), Message())
    with pytest.raises(Fatal, match="writes to scored"):
        out.flush(1.0)


def test_records_larger_than_their_topic_takes_are_refused_before_sending() -> None:
    out = sink()
    out.limits = {"scored": 1000}
    assert not out.produce("scored", b"k", b"x" * (1000 - RECORD_OVERHEAD))
    assert out.produce("scored", b"k", b"x" * 100)
    assert out.produce("other", None, b"x" * 5000)  # no limit known: librdkafka's own check applies
    assert not out.produce("other", None, b"x" * 1_100_000)  # librdkafka's message.max.bytes (1,000,000)
