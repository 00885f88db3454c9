"""Malformed input goes to the DLQ with its bytes and reason; its partition keeps moving."""

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.settings import Settings
from streamer.worker import Worker
from tests.conftest import SCHEMAS, STRICT_MAX_AMOUNT, STRICT_NAN_AMOUNT
from tests.integration.conftest import (
    SettingsFactory,
    committed_offsets,
    end_offsets,
    produce_payments,
    produce_values,
    read_topic,
)


def test_poison_records_are_dead_lettered_and_the_rest_scored(make_settings: SettingsFactory) -> None:
    settings = make_settings(topics={"partitions": 1})
    codec = AvroCodec(settings.schemas.input)
    columns, _ = synth_payments(200, np.random.default_rng(5), id_prefix="ok-")
    good = codec.encode(rows_of(columns))
    poison = {
        b"\xff\xfe not avro": "not a valid streamer.demo.Payment record",
        good[0] + b"\x00\x01": "bytes left",
        codec.encode_one(rows_of(columns)[1] | {"amount": math.inf}): "amount is inf",
        b"": "not a valid streamer.demo.Payment record: EOFError",
    }
    values = good[:100] + list(poison) + good[100:]
    produce_values(settings, values)

    stats = Worker(settings).run(max_events=len(values), timeout_s=120)

    assert (stats.scored, stats.dead_lettered) == (200, len(poison))
    brokers = str(settings.admin_config()["bootstrap.servers"])
    dlq_codec = AvroCodec(SCHEMAS / "dlq_record.avsc")
    letters = read_topic(brokers, settings.topics.dlq, len(poison))
    assert len(letters) == len(poison)
    for letter in letters:
        record = dlq_codec.decode_one(letter.value)
        assert record["original_value"] in poison  # original bytes, verbatim
        reason = poison[record["original_value"]]
        assert reason in record["error_message"]
        assert record["source_offset"] == values.index(record["original_value"])
        assert letter.headers["streamer.error.class"].decode() == record["error_class"]
        assert letter.headers["streamer.source"] == f"{settings.topics.input}/0/{record['source_offset']}".encode()
        assert letter.headers["streamer.worker"] == settings.worker_id.encode()
    assert len(read_topic(brokers, settings.topics.scored, 200)) == 200
    assert committed_offsets(settings) == end_offsets(settings) == {0: len(values)}


def test_events_the_model_rejects_are_dead_lettered_and_their_batch_scored(
    make_settings: SettingsFactory, strict_model: Path
) -> None:
    settings = make_settings(topics={"partitions": 1}, model={"path": str(strict_model)})
    codec = AvroCodec(settings.schemas.input)
    columns, _ = synth_payments(300, np.random.default_rng(6), id_prefix="ok-")
    rows = rows_of(columns)
    rows[50]["amount"] = STRICT_MAX_AMOUNT * 100  # decodes fine, fails the graph's assertion
    rows[200]["amount"] = STRICT_NAN_AMOUNT  # scored NaN
    values = codec.encode(rows)
    produce_values(settings, values)

    stats = Worker(settings).run(max_events=len(values), timeout_s=120)

    assert (stats.scored, stats.dead_lettered) == (298, 2)
    brokers = str(settings.admin_config()["bootstrap.servers"])
    letters = [
        AvroCodec(SCHEMAS / "dlq_record.avsc").decode_one(m.value) for m in read_topic(brokers, settings.topics.dlq, 2)
    ]
    by_offset = {letter["source_offset"]: letter for letter in letters}
    assert sorted(by_offset) == [50, 200]
    assert by_offset[50]["error_class"] == by_offset[200]["error_class"] == "ModelRejected"
    assert "amount out of range" in by_offset[50]["error_message"]
    assert "must be finite" in by_offset[200]["error_message"]
    assert by_offset[50]["original_value"] == values[50]
    scored_ids = {
        AvroCodec(settings.schemas.scored).decode_one(m.value)["event_id"]
        for m in read_topic(brokers, settings.topics.scored, 298)
    }
    assert scored_ids == {row["event_id"] for i, row in enumerate(rows) if i not in (50, 200)}
    assert committed_offsets(settings) == end_offsets(settings) == {0: len(values)}


def set_topic_config(settings: Settings, topic: str, config: dict[str, str]) -> None:
    admin = AdminClient(settings.admin_config())
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def produce_large(settings: Settings, values: list[bytes]) -> None:
    producer = Producer({**settings.admin_config(), "message.max.bytes": 10_000_000})
    for value in values:
        producer.produce(settings.topics.input, value)
        producer.poll(0)
    assert producer.flush(30) == 0


def garbage(n: int, seed: int) -> bytes:
    return b"\xff" + np.random.default_rng(seed).integers(0, 256, n - 1, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_records_larger_than_the_dlq_takes_become_truncated_dead_letters(
    make_settings: SettingsFactory, mode: str
) -> None:
    """Default limits: a 1,040,000-byte and a 5 MB garbage record between good events."""
    settings = make_settings(topics={"partitions": 1}, delivery={"mode": mode, "commit_interval_ms": 200})
    set_topic_config(settings, settings.topics.input, {"max.message.bytes": "8000000"})
    codec = AvroCodec(settings.schemas.input)
    columns, _ = synth_payments(200, np.random.default_rng(7), id_prefix="ok-")
    good = codec.encode(rows_of(columns))
    poison = [garbage(1_040_000, 1), garbage(5_000_000, 2)]
    values = good[:70] + poison[:1] + good[70:140] + poison[1:] + good[140:]
    produce_large(settings, values)

    stats = Worker(settings).run(max_events=len(values), timeout_s=120)

    assert (stats.scored, stats.dead_lettered) == (200, 2)
    brokers = str(settings.admin_config()["bootstrap.servers"])
    letters = read_topic(brokers, settings.topics.dlq, 2)
    assert len(letters) == 2
    dlq_codec = AvroCodec(SCHEMAS / "dlq_record.avsc")
    for letter in letters:
        record = dlq_codec.decode_one(letter.value)
        original = values[record["source_offset"]]
        assert original in poison
        assert record["original_truncated"] is True
        assert original.startswith(record["original_value"]) and 900_000 < len(record["original_value"]) < 1_000_000
        assert record["original_size"] == len(original)
        assert record["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert letter.headers["streamer.original.truncated"] == b"true"
        assert letter.headers["streamer.original.sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert len(read_topic(brokers, settings.topics.scored, 200)) == 200
    assert committed_offsets(settings) == end_offsets(settings) == {0: len(values)}


def test_a_dlq_topic_smaller_than_the_producer_limit_truncates_instead_of_rewinding(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Producer limit raised to 10 MB, the DLQ topic at the broker's ~1 MB default, one 1.5 MB
    record: before, the broker refused the letter and the worker rewound forever."""
    settings = make_settings(topics={"partitions": 1}, kafka={"producer": {"message.max.bytes": 10_000_000}})
    set_topic_config(settings, settings.topics.input, {"max.message.bytes": "8000000"})
    columns, _ = synth_payments(100, np.random.default_rng(8), id_prefix="ok-")
    good = AvroCodec(settings.schemas.input).encode(rows_of(columns))
    values = [*good[:50], garbage(1_500_000, 3), *good[50:]]
    produce_large(settings, values)

    with caplog.at_level(logging.WARNING):
        stats = Worker(settings).run(max_events=len(values), timeout_s=120)

    assert (stats.scored, stats.dead_lettered) == (100, 1)
    assert not [r for r in caplog.records if getattr(r, "event", None) == "rewind"]
    brokers = str(settings.admin_config()["bootstrap.servers"])
    (letter,) = read_topic(brokers, settings.topics.dlq, 1)
    record = AvroCodec(SCHEMAS / "dlq_record.avsc").decode_one(letter.value)
    assert record["error_class"] == "PoisonRecord" and "exceeds schemas.max_record_bytes" in record["error_message"]
    assert record["original_truncated"] and record["original_size"] == 1_500_000
    assert len(read_topic(brokers, settings.topics.scored, 100)) == 100
    assert committed_offsets(settings) == end_offsets(settings) == {0: len(values)}


def test_scored_records_the_topic_cannot_take_are_dead_lettered_not_lost(make_settings: SettingsFactory) -> None:
    settings = make_settings(topics={"partitions": 1})
    set_topic_config(settings, settings.topics.scored, {"max.message.bytes": "100"})
    sent = produce_payments(settings, 50, seed=9)

    stats = Worker(settings).run(max_events=50, timeout_s=120)

    assert (stats.scored, stats.dead_lettered) == (0, 50)
    brokers = str(settings.admin_config()["bootstrap.servers"])
    letters = [
        AvroCodec(SCHEMAS / "dlq_record.avsc").decode_one(m.value) for m in read_topic(brokers, settings.topics.dlq, 50)
    ]
    assert sorted(r["original_value"] for r in letters) == sorted(sent.values)
    assert {r["error_class"] for r in letters} == {"OutputRefused"}
    assert all(f"larger than {settings.topics.scored} accepts" in r["error_message"] for r in letters)
    assert committed_offsets(settings) == end_offsets(settings) == {0: 50}


def test_fuzzed_records_of_any_size_are_scored_or_dead_lettered(make_settings: SettingsFactory) -> None:
    """Random bytes of random sizes up to past every limit (max_record_bytes, the producer's and
    the DLQ's), and damaged good records, between good events: the worker never stops, every
    record is accounted for, and the partition's committed offset reaches its end."""
    settings = make_settings(topics={"partitions": 1})
    set_topic_config(settings, settings.topics.input, {"max.message.bytes": "4000000"})
    rng = np.random.default_rng(11)
    columns, _ = synth_payments(300, rng, id_prefix="ok-")
    good = AvroCodec(settings.schemas.input).encode(rows_of(columns))
    sizes = [0, 1, 2, 7, 64, 999_000, 1_000_000, 1_048_576, 1_048_577, 1_100_000, 2_500_000, 3_900_000]
    fuzz = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    fuzz += [g[: rng.integers(0, len(g))] for g in good[:10]]  # cut short
    fuzz += [g + rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes() for g in good[10:20]]
    values = list(good)
    for record in fuzz:
        values.insert(int(rng.integers(0, len(values) + 1)), record)
    produce_large(settings, values)

    stats = Worker(settings).run(max_events=len(values), timeout_s=180)

    assert stats.scored + stats.dead_lettered == len(values)
    assert stats.scored >= len(good) - 20  # the damaged twenty may still decode
    brokers = str(settings.admin_config()["bootstrap.servers"])
    letters = read_topic(brokers, settings.topics.dlq, stats.dead_lettered)
    assert len(letters) == stats.dead_lettered
    for letter in letters:
        assert letter.headers["streamer.error.class"] and letter.headers["streamer.error.message"]
    assert committed_offsets(settings) == end_offsets(settings) == {0: len(values)}
