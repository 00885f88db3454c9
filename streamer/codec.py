"""Avro ↔ columns, with fastavro.

Input values are schemaless Avro (the writer schema is the configured one), or Confluent-framed
(magic byte 0, a 4-byte schema id, then the body): the id names the writer schema, from a local
`id → .avsc` map or a Schema Registry, and fastavro resolves it to the reader schema, so
compatible evolutions (added fields with defaults, promotions) decode and incompatible ones are
dead-lettered with the reason.

Logical types are stripped from the schema before parsing: the bytes are the same, and
timestamps stay plain integers (milliseconds) instead of becoming `datetime` objects per event,
which is both slower and not what the model's signature takes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from streamer.errors import Fatal, PoisonRecord
from streamer.records import Columns, DeadLetter, EventBatch, RawBatch, ScoredBatch
from streamer.settings import Settings

_NUMPY_TYPES = {
    "long": np.int64,
    "int": np.int32,
    "double": np.float64,
    "float": np.float32,
    "boolean": np.bool_,
}


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        bare = {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
        return bare["type"] if bare.keys() == {"type"} else bare  # {"type": "long"} is just "long"
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


def _parse(text: str, origin: object) -> tuple[dict[str, Any], Any]:
    """(declaration without logical types, parsed schema); a bad schema is `Fatal`."""
    try:
        declared = _without_logical_types(json.loads(text))
        return declared, parse_schema(declared)
    except Exception as exc:  # json and fastavro raise several types for an invalid schema
        raise Fatal(f"schema {origin}: not a valid Avro schema ({exc})") from exc


def _read(path: Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise Fatal(f"schema {path}: cannot read ({exc.strerror}); check schemas.* in the config") from exc


class WriterSchemas:
    """Schema id → parsed writer schema: the local map first, then the registry; cached."""

    def __init__(self, local: Mapping[int, Path], registry_url: str | None) -> None:
        self._parsed = {schema_id: _parse(_read(path), path)[1] for schema_id, path in local.items()}
        self._registry = SchemaRegistryClient({"url": registry_url}) if registry_url else None

    def get(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            if self._registry is None:
                raise PoisonRecord(f"unknown writer schema id {schema_id}: add it to schemas.writers")
            try:
                text = str(self._registry.get_schema(schema_id).schema_str)
            except Exception as exc:  # the registry client raises HTTP and connection errors
                raise PoisonRecord(f"writer schema id {schema_id}: schema registry lookup failed ({exc})") from exc
            parsed = self._parsed[schema_id] = _parse(text, f"id {schema_id}")[1]
        return parsed


class AvroCodec:
    """One record schema: decodes message values into columns and encodes rows into values.
    With `writers`, values are Confluent-framed and read through their writer schema."""

    def __init__(self, path: Path, writers: WriterSchemas | None = None, max_record_bytes: int | None = None) -> None:
        declared, self.schema = _parse(_read(path), path)
        self.writers = writers
        self.max_record_bytes = max_record_bytes
        self.name: str = ".".join(filter(None, (declared.get("namespace"), declared.get("name"))))
        self.field_types: dict[str, Any] = {f["name"]: f["type"] for f in declared["fields"]}

    def _numpy_type(self, name: str) -> type:
        """Primitive fields get a numeric column; strings, unions and the rest stay objects."""
        avro_type = self.field_types[name]
        return _NUMPY_TYPES.get(avro_type, np.object_) if isinstance(avro_type, str) else np.object_

    def decode_one(self, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise PoisonRecord("message has no value (tombstone)")
        if self.max_record_bytes is not None and len(value) > self.max_record_bytes:
            raise PoisonRecord(f"record of {len(value)} bytes exceeds schemas.max_record_bytes={self.max_record_bytes}")
        writer, start = self.schema, 0
        if self.writers is not None:
            if len(value) < 5 or value[0] != 0:
                raise PoisonRecord("not Confluent-framed (magic byte 0 and a 4-byte schema id expected)")
            writer, start = self.writers.get(int.from_bytes(value[1:5], "big")), 5
        buffer = io.BytesIO(value)
        buffer.seek(start)
        try:
            record = schemaless_reader(buffer, writer, self.schema if writer is not self.schema else None)
        except SchemaResolutionError as exc:
            raise PoisonRecord(f"writer schema cannot be read as {self.name}: {exc}") from exc
        if buffer.tell() != len(value):
            raise PoisonRecord(
                f"{len(value) - buffer.tell()} bytes left after a {self.name} record: "
                "written with another schema, or not Avro"
            )
        return record  # type: ignore[return-value]

    def decode(self, raw: RawBatch) -> tuple[EventBatch, list[DeadLetter]]:
        """Good records become columns; bad ones become dead letters, never exceptions."""
        rows: list[dict[str, Any]] = []
        kept: list[int] = []
        dead: list[DeadLetter] = []
        for i, value in enumerate(raw.values):
            try:
                rows.append(self.decode_one(value))
                kept.append(i)
            except PoisonRecord as exc:
                dead.append(self._dead_letter(raw, i, type(exc).__name__, str(exc)))
            except Exception as exc:  # any decoder failure means this record is malformed
                reason = f"not a valid {self.name} record: {str(exc) or type(exc).__name__}"
                dead.append(self._dead_letter(raw, i, type(exc).__name__, reason))
        columns = self.columns_of(rows)
        index = np.array(kept, dtype=np.int64)
        batch = EventBatch(
            columns,
            raw.partitions[index],
            raw.offsets[index],
            [raw.keys[i] for i in kept],
            [raw.values[i] for i in kept],
        )
        bad = np.zeros(len(batch), dtype=bool)
        for name, column in columns.items():
            if column.dtype.kind == "f":
                non_finite = ~np.isfinite(column)
                for row in np.flatnonzero(non_finite & ~bad):
                    reason = f"field {name} is {float(column[row])}; finite numbers only"
                    dead.append(self._dead_letter(raw, kept[row], PoisonRecord.__name__, reason))
                bad |= non_finite
        return (batch.take(~bad) if bad.any() else batch), dead

    def columns_of(self, rows: list[dict[str, Any]]) -> Columns:
        return {name: np.array([row[name] for row in rows], dtype=self._numpy_type(name)) for name in self.field_types}

    def read_container(self, path: Path, batch_size: int) -> Iterator[Columns]:
        """An Avro container file (as written by fastavro, Spark, Flink) in column batches, read
        with this schema as the reader schema, so compatible writer schemas are resolved."""
        with open(path, "rb") as stream:
            rows: list[dict[str, Any]] = []
            for row in fastavro.reader(stream, self.schema):
                rows.append(row)  # type: ignore[arg-type]
                if len(rows) == batch_size:
                    yield self.columns_of(rows)
                    rows = []
            if rows:
                yield self.columns_of(rows)

    def write_container(self, path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        with open(path, "wb") as stream:
            fastavro.writer(stream, self.schema, rows)

    @staticmethod
    def _dead_letter(raw: RawBatch, i: int, error_class: str, reason: str) -> DeadLetter:
        return DeadLetter(
            raw.topic, int(raw.partitions[i]), int(raw.offsets[i]), raw.keys[i], raw.values[i], error_class, reason
        )

    def encode_one(self, row: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        schemaless_writer(buffer, self.schema, row)
        return buffer.getvalue()

    def encode(self, rows: Iterable[Mapping[str, Any]]) -> list[bytes]:
        return [self.encode_one(row) for row in rows]


def scored_rows(scored: ScoredBatch, key_field: str, entity_field: str, time_field: str) -> list[dict[str, Any]]:
    """The scored-event rows of a batch, in input order (see schemas/scored_payment.avsc)."""
    events = scored.events
    shadow_scores = [] if scored.shadow_scores is None else scored.shadow_scores.tolist()
    shadows = [None if s != s else s for s in shadow_scores] or [None] * len(events)  # NaN: not shadowed
    return [
        {
            "event_id": event_id,
            "entity_id": entity_id,
            "event_time": event_time,
            "score": score,
            "alert": alert,
            "model_name": scored.model_name,
            "model_version": version,
            "scored_at": scored.scored_at_ms,
            "features_degraded": scored.features_degraded,
            "shadow_score": shadow,
            "shadow_version": None if shadow is None else scored.shadow_version,
            "source_partition": partition,
            "source_offset": offset,
        }
        for event_id, entity_id, event_time, score, alert, version, shadow, partition, offset in zip(
            events.columns[key_field].tolist(),
            events.columns[entity_field].tolist(),
            events.columns[time_field].tolist(),
            scored.scores.tolist(),
            scored.alerts.tolist(),
            scored.model_versions.tolist(),
            shadows,
            events.partitions.tolist(),
            events.offsets.tolist(),
            strict=True,
        )
    ]


def dead_letter_row(dead: DeadLetter, worker_id: str, failed_at_ms: int) -> dict[str, Any]:
    return {
        "original_value": dead.value,
        "error_class": dead.error_class,
        "error_message": dead.error_message,
        "source_topic": dead.topic,
        "source_partition": dead.partition,
        "source_offset": dead.offset,
        "worker_id": worker_id,
        "failed_at": failed_at_ms,
    }


def input_codec(settings: Settings) -> AvroCodec:
    """The input events' codec as the config describes it (framing, writer schemas, size bound)."""
    schemas = settings.schemas
    writers = WriterSchemas(schemas.writers, schemas.registry_url) if schemas.input_framing == "confluent" else None
    return AvroCodec(schemas.input, writers, schemas.max_record_bytes)
