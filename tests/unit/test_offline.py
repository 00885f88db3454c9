"""`streamer score` reads Avro container files as other writers make them: logical types,
nullable unions either way round, timestamps in µs; refused records go to a dead-letter file."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.offline import dead_letter_path, score_file
from streamer.settings import Settings
from tests.conftest import ROOT, SCHEMAS, nullable_payments

EVENTS = 300


@pytest.fixture(scope="module")
def payments() -> list[dict[str, Any]]:
    columns, _ = synth_payments(EVENTS, np.random.default_rng(12), id_prefix="f-")
    return rows_of(columns)


def settings_for(demo_model: Path, input_schema: Path) -> Settings:
    return Settings.model_validate(
        {
            "topics": {"input": "in", "scored": "out", "dlq": "dlq"},
            "schemas": {
                "input": str(input_schema),
                "scored": str(SCHEMAS / "scored_payment.avsc"),
                "dlq": str(SCHEMAS / "dlq_record.avsc"),
            },
            "model": {"path": str(demo_model)},
            "event": {"entity_field": "card_id"},
        }
    )


def scored(path: Path) -> dict[str, float]:
    with open(path, "rb") as stream:
        return {row["event_id"]: row["score"] for row in fastavro.reader(stream)}  # type: ignore[call-overload, index]


def test_logical_types_and_nullable_fields_written_by_fastavro_score_as_plain_ones(
    demo_model: Path, tmp_path: Path, payments: list[dict[str, Any]]
) -> None:
    schema = nullable_payments(tmp_path, ("card_id", "merchant_id"))
    settings = settings_for(demo_model, schema)
    plain, declared = tmp_path / "plain.avro", tmp_path / "declared.avro"
    AvroCodec(schema).write_container(plain, payments)
    with open(declared, "wb") as stream:  # the schema as declared, timestamp-millis as datetimes
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        timed = [row | {"event_time": epoch + timedelta(milliseconds=row["event_time"])} for row in payments]
        fastavro.writer(stream, fastavro.parse_schema(json.loads(schema.read_text())), timed)

    reference = score_file(settings, plain, tmp_path / "a.avro")
    summary = score_file(settings, declared, tmp_path / "b.avro")

    assert (summary.read, summary.scored, summary.dead_lettered) == (EVENTS, EVENTS, 0)
    assert reference == summary.__class__(EVENTS, EVENTS, 0, dead_letter_path(tmp_path / "a.avro"))
    assert scored(tmp_path / "b.avro") == scored(tmp_path / "a.avro")
    assert not dead_letter_path(tmp_path / "b.avro").exists()


def test_a_spark_style_file_reads_through_schema_resolution(
    demo_model: Path, tmp_path: Path, payments: list[dict[str, Any]]
) -> None:
    """Spark writes nullable unions value-first and timestamps in microseconds."""
    declared = json.loads((SCHEMAS / "payment.avsc").read_text())
    for field in declared["fields"]:
        if field["name"] == "event_time":
            field["type"] = [{"type": "long", "logicalType": "timestamp-micros"}, "null"]
        elif field["name"] == "device_id":
            field["type"] = ["string", "null"]
    spark = tmp_path / "spark.avro"
    with open(spark, "wb") as stream:
        rows = [row | {"event_time": row["event_time"] * 1000} for row in payments]
        fastavro.writer(stream, fastavro.parse_schema(declared), rows)
    plain = tmp_path / "plain.avro"
    AvroCodec(SCHEMAS / "payment.avsc").write_container(plain, payments)
    settings = settings_for(demo_model, SCHEMAS / "payment.avsc")

    assert score_file(settings, spark, tmp_path / "a.avro").scored == EVENTS
    score_file(settings, plain, tmp_path / "b.avro")
    assert scored(tmp_path / "a.avro") == scored(tmp_path / "b.avro")


def test_refused_records_go_to_a_dead_letter_file_and_the_rest_is_scored(
    demo_model: Path, tmp_path: Path, payments: list[dict[str, Any]]
) -> None:
    schema = nullable_payments(tmp_path, ("card_id", "amount"))
    rows = [dict(row) for row in payments]
    rows[3]["card_id"], rows[5]["amount"], rows[8]["amount"] = None, None, float("nan")
    source, target = tmp_path / "in.avro", tmp_path / "out.avro"
    AvroCodec(schema).write_container(source, rows)

    summary = score_file(settings_for(demo_model, schema), source, target)

    assert (summary.read, summary.scored, summary.dead_lettered) == (EVENTS, EVENTS - 3, 3)
    assert (
        summary.line(target)
        == f"read {EVENTS} events: scored {EVENTS - 3} into {target}; 3 dead-lettered into {summary.dead_letters}"
    )
    with open(dead_letter_path(target), "rb") as stream:
        letters = {row["source_offset"]: row for row in fastavro.reader(stream)}  # type: ignore[call-overload, index]
    assert sorted(letters) == [3, 5, 8]
    assert letters[3]["error_class"] == "MissingEntity" and letters[5]["error_class"] == "NullInput"
    assert letters[8]["error_message"] == "field amount is nan; finite numbers only"
    assert AvroCodec(schema).decode_one(letters[5]["original_value"]) == rows[5]  # the record itself
    assert all(letter["source_topic"] == str(source) for letter in letters.values())


JAVA_CONTAINER = ROOT / "tests" / "data" / "payments_java.avro"  # made by tests/data/java_container/regenerate.sh


def test_a_container_written_by_java_scores_as_the_same_records_written_plain(demo_model: Path, tmp_path: Path) -> None:
    """The Avro Java library's file: deflate blocks, uuid event ids and timestamp-millis written
    from UUID and Instant, nullable card and merchant ids, and a decimal the reader schema leaves
    out. Its row 7 has no card id: a dead letter, the rest scored."""
    schema = nullable_payments(tmp_path, ("card_id", "merchant_id"))
    settings = settings_for(demo_model, schema)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    with open(JAVA_CONTAINER, "rb") as stream:
        java = list(fastavro.reader(stream))
    names = AvroCodec(schema).field_types
    plain = [
        {name: row[name] for name in names}  # type: ignore[call-overload]
        | {"event_id": str(row["event_id"]), "event_time": (row["event_time"] - epoch) // timedelta(milliseconds=1)}  # type: ignore[call-overload, operator]
        for row in java
    ]
    AvroCodec(schema).write_container(tmp_path / "plain.avro", plain)

    summary = score_file(settings, JAVA_CONTAINER, tmp_path / "java-scored.avro")
    score_file(settings, tmp_path / "plain.avro", tmp_path / "plain-scored.avro")

    assert (summary.read, summary.scored, summary.dead_lettered) == (60, 59, 1)
    assert scored(tmp_path / "java-scored.avro") == scored(tmp_path / "plain-scored.avro")
    assert len(scored(tmp_path / "java-scored.avro")) == 59
    with open(dead_letter_path(tmp_path / "java-scored.avro"), "rb") as stream:
        (letter,) = fastavro.reader(stream)
    assert letter["source_offset"] == 7  # type: ignore[call-overload, index]
