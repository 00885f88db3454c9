"""The quality record and the worker's score values survive their encodings."""

from __future__ import annotations

import numpy as np

from streamer.codec import AvroCodec
from streamer.quality.records import from_avro_record, to_avro_record
from streamer.quality.scores import VALUE, unpack
from streamer.quality.windows import QualityAccumulator
from tests.conftest import SCHEMAS


def test_a_quality_window_round_trips_through_its_avro_schema() -> None:
    accumulator = QualityAccumulator(60, 0.5, "c1")
    accumulator.add(np.array([1_000, 61_000]), np.array([3, 3]), np.array([0.2, 0.9]), np.array([False, True]))
    codec = AvroCodec(SCHEMAS / "quality_window.avsc")
    for counts in accumulator.take():
        assert from_avro_record(codec.decode_one(codec.encode_one(to_avro_record(counts)))) == counts


def test_score_values_unpack_and_missing_or_foreign_values_are_unknown() -> None:
    values = np.zeros(2, VALUE)
    values["score"], values["model_version"], values["event_time"] = [0.25, 0.75], [1, 2], [10, 20]
    replies = [values[0].tobytes(), None, b"not a score", values[1].tobytes()]
    found, unpacked = unpack(replies)
    assert found.tolist() == [True, False, False, True]
    assert unpacked["score"].tolist() == [0.25, 0.75] and unpacked["event_time"].tolist() == [10, 20]
