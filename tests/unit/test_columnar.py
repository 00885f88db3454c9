"""The columnar path against fastavro: the same bytes written, the same outcome read (columns,
or the dead letter and its reason), through the codec that chooses between them."""

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.codec import AvroCodec, WriterSchemas
from streamer.demo.payments import rows_of, synth_payments
from tests.conftest import SCHEMAS, raw_batch


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SCHEMAS / "payment.avsc")


def test_columnar_encoding_is_byte_for_byte_fastavro() -> None:
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    rng = random.Random(7)
    rows = [
        {
            "event_id": rng.choice(["", "é€😀", f"e{i}", "x" * 300]),
            "entity_id": f"card-{i % 77:07d}",
            "event_time": rng.choice([0, -1, 63, 64, -65, 2**62, -(2**63), 2**63 - 1, 1_795_900_000_000 + i]),
            "score": rng.choice([0.0, -0.0, 1e-300, math.inf, rng.random()]),
            "alert": rng.random() < 0.3,
            "model_name": "fraud",
            "model_version": rng.choice([1, 2, 300]),
            "scored_at": 1_795_900_000_100,
            "features_degraded": rng.random() < 0.5,
            "shadow_score": rng.choice([None, 0.5, -1e10]),
            "shadow_version": rng.choice([None, 2, 2**40]),
            "source_partition": rng.choice([0, 3, -1, 2**31 - 1]),
            "source_offset": i,
        }
        for i in range(1000)
    ]
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    columns |= {name: np.array(columns[name]) for name in ("event_time", "score", "alert", "source_offset")}
    assert codec.encode_columns(columns, len(rows)) == codec.encode(rows)
    assert codec.encode_columns({name: [] for name in columns}, 0) == []


def test_schemas_the_columnar_encoder_does_not_cover_fall_back_to_fastavro(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}]}
    (tmp_path / "r.avsc").write_text(json.dumps(schema))
    codec = AvroCodec(tmp_path / "r.avsc")
    assert codec.encode_columns({"tags": [["a"], []]}, 2) == codec.encode([{"tags": ["a"]}, {"tags": []}])


def _edge_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Payments with the values a varint or UTF-8 reader gets wrong first."""
    rng = random.Random(seed)
    columns, _ = synth_payments(n, np.random.default_rng(seed))
    rows = rows_of(columns)
    for row in rows:
        row["event_id"] = rng.choice(["", "é€😀", "nul\x00", "\x00", "x" * 300, row["event_id"]])
        row["device_id"] = rng.choice([None, "", "ü", row["device_id"]])
        row["amount"] = rng.choice([0.0, -0.0, 1e-300, -1e300, row["amount"]])
        row["customer_tenure_days"] = rng.choice([0, -1, 63, 64, -65, 2**31 - 1, -(2**31)])
        row["event_time"] = rng.choice([0, -1, 2**62, -(2**63), 2**63 - 1, row["event_time"]])
    return rows


def _same_outcome(fast: AvroCodec, reference: AvroCodec, values: list[bytes | None]) -> None:
    batch, dead = fast.decode(raw_batch(values))
    expected, expected_dead = reference.decode(raw_batch(values))
    assert list(batch.offsets) == list(expected.offsets)
    for name, column in expected.columns.items():
        assert batch.columns[name].dtype == column.dtype, name
        assert batch.columns[name].tolist() == column.tolist(), name
    reasons = sorted((d.offset, d.error_message) for d in dead)
    assert reasons == sorted((d.offset, d.error_message) for d in expected_dead)


@pytest.mark.parametrize("schema", ["payment.avsc", "scored_payment.avsc"])
def test_columnar_decoding_reads_what_fastavro_reads(schema: str) -> None:
    fast, reference = AvroCodec(SCHEMAS / schema), AvroCodec(SCHEMAS / schema, columnar=False)
    if schema == "payment.avsc":
        rows = _edge_rows(500, 3)
    else:
        rng = random.Random(5)
        rows = [
            {
                "event_id": f"e{i}",
                "entity_id": rng.choice(["card-1", "ß"]),
                "event_time": i,
                "score": rng.random(),
                "alert": rng.random() < 0.5,
                "model_name": "fraud",
                "model_version": 3,
                "scored_at": 2**40,
                "features_degraded": False,
                "shadow_score": rng.choice([None, 0.25, -1e10]),
                "shadow_version": rng.choice([None, 2, -(2**40)]),
                "source_partition": rng.choice([0, -1, 2**31 - 1]),
                "source_offset": i,
            }
            for i in range(500)
        ]
    values: list[bytes | None] = list(reference.encode(rows))
    _same_outcome(fast, reference, values)
    _same_outcome(fast, reference, [])


def test_columnar_decoding_leaves_doubtful_records_to_fastavro(codec: AvroCodec) -> None:
    """Truncated, extended and corrupted records: the same survivors, values and dead-letter
    reasons as reading every record with fastavro."""
    reference = AvroCodec(SCHEMAS / "payment.avsc", columnar=False)
    rng = random.Random(11)
    good = reference.encode(_edge_rows(60, 4))
    values: list[bytes | None] = []
    for value in good:
        cut = rng.randrange(len(value))
        flipped = bytearray(value)
        flipped[rng.randrange(len(value))] = rng.randrange(256)
        values += [value, value[:cut], value + b"\x02", bytes(flipped), b"\xff" * 12 + value, b"\x80" * 11, None]
    values.append(b"\x08\xc3\x28ab" + good[0][1:])  # invalid UTF-8 where event_id's text starts
    _same_outcome(codec, reference, values)


def test_framed_records_under_the_reader_schema_take_the_columnar_path(tmp_path: Path) -> None:
    (tmp_path / "v1.avsc").write_text((SCHEMAS / "payment.avsc").read_text())
    writers = {7: tmp_path / "v1.avsc"}
    fast = AvroCodec(SCHEMAS / "payment.avsc", WriterSchemas(writers, None))
    reference = AvroCodec(SCHEMAS / "payment.avsc", WriterSchemas(writers, None), columnar=False)
    bodies = reference.encode(_edge_rows(40, 6))
    framed: list[bytes | None] = [b"\x00" + (7).to_bytes(4, "big") + body for body in bodies]
    framed += [b"\x00" + (8).to_bytes(4, "big") + bodies[0], b"\x01" + bytes(4) + bodies[0], b"\x00\x00"]
    _same_outcome(fast, reference, framed)


def test_a_string_that_claims_more_bytes_than_its_record_holds_is_left_to_fastavro(tmp_path: Path) -> None:
    """The last field too: no later read runs past the end to give it away."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}]}
    (tmp_path / "r.avsc").write_text(json.dumps(schema))
    fast, reference = AvroCodec(tmp_path / "r.avsc"), AvroCodec(tmp_path / "r.avsc", columnar=False)
    values: list[bytes | None] = list(reference.encode([{"n": i, "s": f"text {i}"} for i in range(200)]))
    values[7] = values[7][:-1]  # the string's length now counts one byte the record lacks
    values[8] = values[8][:-3]
    _same_outcome(fast, reference, values)
    assert len(fast.decode(raw_batch(values))[1]) == 2


def test_an_int_wider_than_32_bits_is_a_dead_letter_on_both_paths(codec: AvroCodec) -> None:
    reference = AvroCodec(SCHEMAS / "payment.avsc", columnar=False)
    rows = _edge_rows(120, 8)
    rows[5]["customer_tenure_days"] = 2**40  # fastavro writes and reads it as a long would
    values: list[bytes | None] = list(reference.encode(rows))
    _same_outcome(codec, reference, values)
    _same_outcome(reference, reference, values[:10])  # the row-by-row path alone
    dead = codec.decode(raw_batch(values))[1]
    assert [(d.offset, d.error_message) for d in dead] == [
        (5, f"field customer_tenure_days is {2**40}, outside the 32-bit range of an Avro int")
    ]


_FIELD_TYPES: list[Any] = ["string", "long", "int", "double", "boolean"]
_FIELD_TYPES += [["null", t] for t in _FIELD_TYPES]


def _random_value(avro_type: Any, rng: random.Random) -> Any:
    if isinstance(avro_type, list):
        return None if rng.random() < 0.3 else _random_value(avro_type[1], rng)
    choices: dict[str, list[Any]] = {
        "string": ["", "a", "é€", "x" * 200, "nul\x00"],
        "long": [0, -1, 2**62, -(2**63), 5],
        "int": [0, -1, 2**31 - 1, -(2**31), 7],
        "double": [0.0, -1.5, 1e300],
        "boolean": [True, False],
    }
    return rng.choice(choices[avro_type])


def test_random_schemas_and_damaged_records_read_as_fastavro_reads_them(tmp_path: Path) -> None:
    """Records of random field lists (any type last), a third of them truncated, overwritten at
    a random byte or extended: the columnar path and fastavro agree on every outcome."""
    rng = random.Random(1)
    for trial in range(30):
        fields = [{"name": f"f{i}", "type": rng.choice(_FIELD_TYPES)} for i in range(rng.randint(1, 5))]
        path = tmp_path / f"s{trial}.avsc"
        path.write_text(json.dumps({"type": "record", "name": "R", "fields": fields}))
        fast, reference = AvroCodec(path), AvroCodec(path, columnar=False)
        rows = [{f["name"]: _random_value(f["type"], rng) for f in fields} for _ in range(120)]
        values: list[bytes | None] = []
        for value in reference.encode(rows):
            damage = rng.random()
            if damage < 0.1 and value:
                value = value[: rng.randrange(len(value))]
            elif damage < 0.2 and value:
                changed = bytearray(value)
                changed[rng.randrange(len(changed))] = rng.randrange(256)
                value = bytes(changed)
            elif damage < 0.3:
                value += bytes([rng.randrange(256)])
            values.append(value)
        _same_outcome(fast, reference, values)
