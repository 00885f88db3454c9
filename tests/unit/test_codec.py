import math

import numpy as np
import pytest

from streamer.codec import AvroCodec
from streamer.demo import rows_of, synth_payments
from streamer.errors import Fatal
from streamer.records import RawBatch
from tests.conftest import SCHEMAS


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SCHEMAS / "payment.avsc")


def raw(values: list[bytes | None]) -> RawBatch:
    n = len(values)
    return RawBatch("t", np.zeros(n, np.int32), np.arange(n, dtype=np.int64), [b"k"] * n, values)


def test_round_trip_into_typed_columns(codec: AvroCodec) -> None:
    columns, _ = synth_payments(50, np.random.default_rng(0))
    batch, dead = codec.decode(raw(codec.encode(rows_of(columns))))
    assert dead == []
    assert batch.columns["amount"].dtype == np.float64
    assert batch.columns["event_time"].dtype == np.int64  # timestamp-millis stays an integer
    assert batch.columns["card_present"].dtype == np.bool_
    np.testing.assert_array_equal(batch.columns["amount"], columns["amount"])
    assert list(batch.columns["device_id"]) == list(columns["device_id"])


def test_malformed_records_become_dead_letters_and_the_rest_survive(codec: AvroCodec) -> None:
    columns, _ = synth_payments(3, np.random.default_rng(0))
    good = codec.encode(rows_of(columns))
    nan_row = rows_of(columns)[0] | {"amount": math.nan}
    values = [good[0], b"\x00garbage", good[1], good[2] + b"tail", None, codec.encode_one(nan_row), good[2]]
    batch, dead = codec.decode(raw(values))
    assert list(batch.offsets) == [0, 2, 6]
    assert {d.offset for d in dead} == {1, 3, 4, 5}
    by_offset = {d.offset: d for d in dead}
    assert by_offset[1].value == b"\x00garbage"  # original bytes kept verbatim
    assert "bytes left" in by_offset[3].error_message
    assert "tombstone" in by_offset[4].error_message
    assert "amount is nan" in by_offset[5].error_message


def test_invalid_schema_file_is_fatal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.avsc"
    path.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(Fatal, match="not a valid Avro schema"):
        AvroCodec(path)
