import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.codec import AvroCodec, WriterSchemas
from streamer.demo.payments import rows_of, synth_payments
from streamer.errors import Fatal
from tests.conftest import SCHEMAS, nullable_payments, raw_batch
from tests.registry_standin import StandInRegistry


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SCHEMAS / "payment.avsc")


def test_round_trip_into_typed_columns(codec: AvroCodec) -> None:
    columns, _ = synth_payments(50, np.random.default_rng(0))
    batch, dead = codec.decode(raw_batch(codec.encode(rows_of(columns))))
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
    batch, dead = codec.decode(raw_batch(values))
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


def framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def writer_schema(tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    declared = json.loads((SCHEMAS / "payment.avsc").read_text())
    change(declared)
    path = tmp_path / name
    path.write_text(json.dumps(declared))
    return path


def test_confluent_framing_resolves_writer_schemas(tmp_path: Path) -> None:
    """v2 added a field (readers ignore it); v3 changed amount to a string (incompatible)."""
    v2 = writer_schema(tmp_path, "v2.avsc", lambda d: d["fields"].append({"name": "tier", "type": "string"}))
    v3 = writer_schema(
        tmp_path, "v3.avsc", lambda d: [f.update(type="string") for f in d["fields"] if f["name"] == "amount"]
    )
    codec = AvroCodec(SCHEMAS / "payment.avsc", WriterSchemas({1: SCHEMAS / "payment.avsc", 2: v2, 3: v3}, None), 4096)
    columns, _ = synth_payments(2, np.random.default_rng(0))
    row = rows_of(columns)[0]
    plain = codec.encode_one(row)
    v2_body = AvroCodec(v2).encode_one(row | {"tier": "gold"})
    v3_body = AvroCodec(v3).encode_one(row | {"amount": "12.5"})
    batch, dead = codec.decode(
        raw_batch([framed(1, plain), framed(2, v2_body), framed(3, v3_body), framed(9, plain), plain, b"\x00" * 5000])
    )
    assert list(batch.offsets) == [0, 1]
    assert batch.columns["amount"].tolist() == [row["amount"]] * 2
    reasons = {d.offset: d.error_message for d in dead}
    assert "cannot be read as streamer.demo.Payment" in reasons[2]
    assert "unknown writer schema id 9" in reasons[3]
    assert "not Confluent-framed" in reasons[4]
    assert "exceeds schemas.max_record_bytes=4096" in reasons[5]


def test_unknown_ids_are_fetched_from_a_schema_registry(schema_registry: StandInRegistry) -> None:
    schema_registry.register("payments-value", (SCHEMAS / "payment.avsc").read_text())
    codec = AvroCodec(SCHEMAS / "payment.avsc", WriterSchemas({}, schema_registry.url, {"max.retries": 0}))
    columns, _ = synth_payments(1, np.random.default_rng(0))
    body = codec.encode_one(rows_of(columns)[0])
    batch, dead = codec.decode(raw_batch([framed(1, body), framed(2, body)]))
    assert list(batch.offsets) == [0]
    assert len(dead) == 1 and "schema registry lookup failed" in dead[0].error_message


def test_a_nullable_double_keeps_its_nulls_and_dead_letters_non_finite_values(tmp_path: Path) -> None:
    codec = AvroCodec(nullable_payments(tmp_path, ("amount",)))
    columns, _ = synth_payments(4, np.random.default_rng(1))
    rows = rows_of(columns)
    for row, amount in zip(rows, [None, math.nan, -math.inf, 12.5], strict=True):
        row["amount"] = amount

    events, dead = codec.decode(raw_batch(codec.encode(rows)))

    assert events.columns["amount"].tolist() == [None, 12.5]
    assert sorted(letter.error_message for letter in dead) == [
        "field amount is -inf; finite numbers only",
        "field amount is nan; finite numbers only",
    ]
