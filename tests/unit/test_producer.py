"""How the sink tells a refusal (resending cannot help) from a failure (a rewind can)."""

import threading
import time
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamer.errors import Fatal, OutputsLost, Retriable
from streamer.kafka.producer import ABANDON_AFTER_S, RECORD_OVERHEAD, KafkaSink
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


class Registering:
    """init_transactions times out `failures` times (a broker away), then succeeds."""

    def __init__(self, failures: int, code: int = KafkaError._TIMED_OUT) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    def init_transactions(self, timeout_s: float) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(self.code))


def transactional(producer: Registering) -> KafkaSink:
    out = KafkaSink({"bootstrap.servers": "127.0.0.1:1", "transactional.id": "t"}, Metrics.create(), transactional=True)
    out._producer = cast(Any, producer)
    out._needs_init = True  # as `_replace` leaves it
    return out


def test_a_replaced_producer_registers_one_bounded_attempt_per_call() -> None:
    producer = Registering(failures=3)
    out = transactional(producer)
    assert not out.restart(0.01) and not out.restart(0.01) and not out.ready  # the loop polls in between
    with pytest.raises(Retriable):
        out.commit_transaction([], None, 0.01)  # no checkpoint before it is registered
    assert out.restart(0.01) and out.ready and producer.calls == 4
    assert out.restart(0.01) and producer.calls == 4  # registered once for all


def test_a_registration_error_waiting_cannot_fix_stops_the_worker() -> None:
    out = transactional(Registering(failures=1, code=KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    with pytest.raises(Fatal, match=r"cannot start transactions as 't': .*[Aa]uthoriz"):
        out.restart(0.01)


class Hanging:
    """send_offsets_to_transaction blocks until released, whatever its timeout, as librdkafka's
    does on a stale group coordinator (librdkafka#5456)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any, timeout_s: float) -> None:
        self.release.wait()


def test_a_send_offsets_call_that_outlives_its_timeout_is_abandoned_with_its_producer() -> None:
    hanging = Hanging()
    out = transactional(cast(Any, hanging))
    out._needs_init = False
    started = time.monotonic()
    try:
        with pytest.raises(OutputsLost, match="outlived its timeout"):
            out.commit_transaction([TopicPartition("in", 0, 5)], None, 0.05)
        assert time.monotonic() - started < 0.05 + ABANDON_AFTER_S + 1.0  # the loop goes on
        assert out._producer is not hanging and not out.ready  # a new instance, to be registered
    finally:
        hanging.release.set()


class Recording:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: Any = None, on_delivery: Any = None
    ) -> None:
        self.values.append(value)


def test_a_framed_topic_gets_its_header_before_every_value_and_the_header_counts_toward_its_limit() -> None:
    out = sink()
    recorder = Recording()
    out._producer = cast(Any, recorder)
    out.frames = {"scored": b"\x00\x00\x00\x00\x07"}
    out.limits = {"scored": 1000, "other": 1000}
    room = 1000 - RECORD_OVERHEAD - len(b"k")
    assert out.produce("scored", b"k", b"x" * (room - 5)) and not out.produce("scored", b"k", b"x" * (room - 4))
    assert out.produce("other", b"k", b"y" * room)  # unframed topics are written as they are
    assert recorder.values == [b"\x00\x00\x00\x00\x07" + b"x" * (room - 5), b"y" * room]


def test_a_cut_is_settled_once_every_output_before_it_has_a_report_and_its_failures_are_raised() -> None:
    out = KafkaSink({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 300}, Metrics.create())
    assert out.produce("scored", b"k", b"v") and out.produce("scored", b"k", b"v")
    first = out.cut()
    assert not out.settled_through(first)  # queued: nowhere to send them
    out.produce("scored", b"k", b"v")
    second = out.cut()
    deadline = time.monotonic() + 10
    while not out.settled_through(second) and time.monotonic() < deadline:
        out.poll()
        time.sleep(0.05)
    assert out.settled_through(first) and out.settled_through(second)
    with pytest.raises(OutputsLost, match="3 outputs not delivered"):  # all timed out
        out.raise_failures()
