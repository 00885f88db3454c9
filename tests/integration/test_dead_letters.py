"""Malformed input goes to the DLQ with its bytes and reason; its partition keeps moving."""

import math
from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo import rows_of, synth_payments
from streamer.worker import Worker
from tests.conftest import SCHEMAS, STRICT_MAX_AMOUNT, STRICT_NAN_AMOUNT
from tests.integration.conftest import (
    SettingsFactory,
    committed_offsets,
    end_offsets,
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
