"""Malformed input goes to the DLQ with its bytes and reason; its partition keeps moving."""

import math

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo import rows_of, synth_payments
from streamer.worker import Worker
from tests.conftest import SCHEMAS
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
