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
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import fastavro
import numpy as np
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from streamer.columnar import COLUMNAR_MIN_RECORDS, INT32_RANGE, ColumnDecoder, ColumnEncoder
from streamer.errors import Fatal, PoisonRecord
from streamer.records import Columns, DeadLetter, EventBatch, RawBatch, Rejection, Rejections
from streamer.registry import SchemaRegistry
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


def nullable_base(avro_type: Any) -> tuple[bool, Any]:
    """(whether a field's type admits null, its non-null type): [null, T] or [T, null] (as Spark
    writes them) are nullable T; other unions stay as they are."""
    if isinstance(avro_type, list) and len(avro_type) == 2 and "null" in avro_type:
        return True, next(t for t in avro_type if t != "null")
    return False, avro_type


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _plain(value: Any, micros: bool) -> Any:
    """A value fastavro decoded through a writer's logical type, back to what the type carries
    (ms or µs since the epoch, days, a string), the way the worker reads it."""
    unit = timedelta(microseconds=1) if micros else timedelta(milliseconds=1)
    if isinstance(value, datetime):
        return ((value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH) // unit
    if isinstance(value, date):
        return (value - _EPOCH.date()).days
    if isinstance(value, time):
        return (
            timedelta(hours=value.hour, minutes=value.minute, seconds=value.second, microseconds=value.microsecond)
            // unit
        )
    if isinstance(value, UUID):
        return str(value)
    return value


def _logical_types(schema: Any) -> dict[str, str]:
    """Field name → logical type of a record's fields ([null, T] unions included), which the
    parsed schema no longer holds."""
    found = {}
    for field in schema.get("fields", []):
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if isinstance(branch, dict) and "logicalType" in branch:
                found[field["name"]] = str(branch["logicalType"])
    return found


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


_STREAM_REPR = re.compile(r" from <[^>]*>")


class WriterSchemas:
    """Schema id → parsed writer schema: the local map first, then the registry; cached."""

    def __init__(
        self, local: Mapping[int, Path], registry_url: str | None, registry_config: Mapping[str, Any] | None = None
    ) -> None:
        self._parsed = {schema_id: _parse(_read(path), path)[1] for schema_id, path in local.items()}
        self._registry = SchemaRegistry(registry_url, registry_config).client if registry_url else None

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

    def ids_writing(self, schema: Any) -> frozenset[bytes]:
        """The ids, as framed (4 bytes, big-endian), of known writer schemas equal to `schema`."""
        return frozenset(i.to_bytes(4, "big") for i, parsed in self._parsed.items() if parsed == schema)


class AvroCodec:
    """One record schema: decodes message values into columns and encodes rows into values.
    With `writers`, values are Confluent-framed and read through their writer schema."""

    def __init__(
        self,
        path: Path,
        writers: WriterSchemas | None = None,
        max_record_bytes: int | None = None,
        columnar: bool = True,
    ) -> None:
        """`columnar=False` reads and writes every record with fastavro, the reference the
        columnar path is checked against."""
        text = _read(path)
        declared, self.schema = _parse(text, path)
        self.path = Path(path)
        self.logical_types = _logical_types(json.loads(text))
        self.writers = writers
        self.max_record_bytes = max_record_bytes
        self.name: str = ".".join(filter(None, (declared.get("namespace"), declared.get("name"))))
        self.field_types = self.field_types_of(declared)
        self._int_fields = [name for name, t in self.field_types.items() if nullable_base(t)[1] == "int"]
        try:
            if not columnar:
                raise ValueError("columnar path turned off")
            self._column_encoder: ColumnEncoder | None = ColumnEncoder(self.field_types)
            self._column_decoder: ColumnDecoder | None = ColumnDecoder(self.field_types)
        except ValueError:  # a type outside what the columnar path covers: fastavro row by row
            self._column_encoder = self._column_decoder = None

    @staticmethod
    def field_types_of(declared: Mapping[str, Any]) -> dict[str, Any]:
        """Field name → type of a record schema, logical types left out, as the codec reads them."""
        return {f["name"]: f["type"] for f in _without_logical_types(dict(declared))["fields"]}

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
        fields = cast(dict[str, Any], record)
        for name in self._int_fields:  # fastavro reads an int as wide as its varint; Avro's is 32-bit
            number = fields[name]
            if number is not None and not INT32_RANGE[0] <= number <= INT32_RANGE[1]:
                raise PoisonRecord(f"field {name} is {number}, outside the 32-bit range of an Avro int")
        return fields

    def decode(self, raw: RawBatch) -> tuple[EventBatch, list[DeadLetter]]:
        """Good records become columns; bad ones become dead letters, never exceptions. Records
        the columnar decoder vouches for skip fastavro; the rest are read one by one."""
        n = len(raw)
        columns, decoded = self._decode_columnar(raw.values)
        slow = np.flatnonzero(~decoded).tolist()
        rows: list[dict[str, Any]] = []
        recovered: list[int] = []
        dead: list[DeadLetter] = []
        for i in slow:
            try:
                rows.append(self.decode_one(raw.values[i]))
                recovered.append(i)
            except PoisonRecord as exc:
                dead.append(self._dead_letter(raw, i, type(exc).__name__, str(exc)))
            except Exception as exc:  # any decoder failure means this record is malformed
                # fastavro's EOFError names the stream object ("from <_io.BytesIO object at
                # 0x…>"): noise in a dead letter, and it would make equal records differ
                detail = _STREAM_REPR.sub("", str(exc)) or type(exc).__name__
                reason = f"not a valid {self.name} record: {detail}"
                dead.append(self._dead_letter(raw, i, type(exc).__name__, reason))
        if recovered:
            for name, values in self.columns_of(rows).items():
                columns[name][recovered] = values
            decoded[recovered] = True
        kept = np.flatnonzero(decoded)
        batch = EventBatch(columns, raw.partitions, raw.offsets, raw.keys, raw.values, raw.headers)
        if len(kept) < n:
            batch = batch.take(kept)
        refused = self.non_finite(batch.columns)
        dead += self.dead_letters(batch, refused, raw.topic)
        return (batch.take(np.setdiff1d(np.arange(len(batch)), list(refused))) if refused else batch), dead

    def non_finite(self, columns: Columns) -> Rejections:
        """Rows holding NaN or an infinity, which no model input can mean; a null is another
        matter, the feature spec's to fill."""
        refused: Rejections = {}
        for name, column in columns.items():
            if column.dtype == object and nullable_base(self.field_types[name])[1] in ("double", "float"):
                column = np.array([0.0 if v is None else v for v in column.tolist()], dtype=np.float64)
            if column.dtype.kind == "f":
                for row in np.flatnonzero(~np.isfinite(column)).tolist():
                    reason = f"field {name} is {float(column[row])}; finite numbers only"
                    refused.setdefault(row, Rejection(PoisonRecord.__name__, reason))
        return refused

    def _decode_columnar(self, values: list[bytes | None]) -> tuple[Columns, np.ndarray]:
        """Columns of every record and a mask of those the columnar decoder read; all False, with
        empty columns to fill, when the schema is outside what it covers or the batch is small."""
        n = len(values)
        if self._column_decoder is None or n < COLUMNAR_MIN_RECORDS:
            return {name: np.empty(n, dtype=self._numpy_type(name)) for name in self.field_types}, np.zeros(n, bool)
        # Eligible: a body in the reader schema itself (framed: under an id whose writer schema is
        # the reader's, so nothing needs resolving), within the size bound.
        limit = self.max_record_bytes if self.max_record_bytes is not None else float("inf")
        if self.writers is None:
            eligible = [value is not None and len(value) <= limit for value in values]
        else:
            ids = self.writers.ids_writing(self.schema)
            eligible = [
                value is not None and len(value) <= limit and value[1:5] in ids and value[0] == 0 for value in values
            ]
        bodies = [value if ok else b"" for value, ok in zip(values, eligible, strict=True)]
        columns, decoded = self._column_decoder.decode(bodies, 0 if self.writers is None else 5)  # type: ignore[arg-type]
        return columns, decoded & np.array(eligible, dtype=bool)

    def columns_of(self, rows: list[dict[str, Any]]) -> Columns:
        return {name: np.array([row[name] for row in rows], dtype=self._numpy_type(name)) for name in self.field_types}

    def read_container(self, path: Path, batch_size: int) -> Iterator[Columns]:
        """An Avro container file (as written by fastavro, Java, Spark, Flink) in column batches,
        read with this schema as the reader schema, so compatible writer schemas are resolved and
        logical types read as their plain values (timestamp-millis as ms since the epoch)."""
        with open(path, "rb") as stream:
            rows: list[dict[str, Any]] = []
            records = fastavro.reader(stream, self.schema)
            # fastavro turns values into datetime, date, UUID… by the *writer's* logical types
            logical = [name for name in _logical_types(records.writer_schema) if name in self.field_types]
            micros = {name: self.logical_types.get(name, "").endswith("micros") for name in logical}
            for row in records:
                for name in logical:
                    row[name] = _plain(row[name], micros[name])  # type: ignore[call-overload, index]
                rows.append(row)  # type: ignore[arg-type]
                if len(rows) == batch_size:
                    yield self.columns_of(rows)
                    rows = []
            if rows:
                yield self.columns_of(rows)

    def decode_container(self, path: Path, batch_size: int) -> Iterator[tuple[EventBatch, list[DeadLetter]]]:
        """A container file as `decode` gives the worker a poll: events and dead letters, after
        the same value checks. Partition -1 and the record's index in the file as its offset
        trace every row back; a dead letter's value is its record encoded with this schema."""
        position = 0
        for columns in self.read_container(path, batch_size):
            n = len(next(iter(columns.values())))
            batch = EventBatch(
                columns, np.full(n, -1, np.int32), np.arange(position, position + n, dtype=np.int64), [None] * n
            )
            position += n
            refused = self.non_finite(columns)
            dead = self.dead_letters(batch, refused, str(path))
            yield (batch.take(np.setdiff1d(np.arange(n), list(refused))) if refused else batch), dead

    def dead_letters(self, events: EventBatch, refused: Rejections, topic: str) -> list[DeadLetter]:
        """The refused rows of `events` as dead letters, in row order; a record whose input bytes
        are not kept (read from a file) is encoded anew with this schema."""
        letters = []
        for row, refusal in sorted(refused.items()):
            letter = events.dead_letter(row, topic, refusal)
            if letter.value is None:
                record = {name: events.columns[name][row] for name in self.field_types}
                letter = replace(letter, value=self.encode_one(record))
            letters.append(letter)
        return letters

    def write_container(self, path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        with open(path, "wb") as stream:
            fastavro.writer(stream, self.schema, rows)

    @staticmethod
    def _dead_letter(raw: RawBatch, i: int, error_class: str, reason: str) -> DeadLetter:
        headers = None if raw.headers is None else raw.headers[i]
        partition, offset = int(raw.partitions[i]), int(raw.offsets[i])
        return DeadLetter(raw.topic, partition, offset, raw.keys[i], raw.values[i], error_class, reason, headers)

    def encode_one(self, row: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        schemaless_writer(buffer, self.schema, row)
        return buffer.getvalue()

    def encode(self, rows: Iterable[Mapping[str, Any]]) -> list[bytes]:
        return [self.encode_one(row) for row in rows]

    def encode_columns(self, columns: Mapping[str, Any], n: int) -> list[bytes]:
        """Records from columns: vectorized when the schema's types allow it, else row by row."""
        if self._column_encoder is not None and n >= COLUMNAR_MIN_RECORDS:
            return self._column_encoder.encode(columns, n)
        names = list(columns)
        return self.encode(dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True))


def input_codec(settings: Settings) -> AvroCodec:
    """The input events' codec as the config describes it (framing, writer schemas, size bound)."""
    schemas = settings.schemas
    confluent = schemas.input_framing == "confluent"
    writers = WriterSchemas(schemas.writers, schemas.registry_url, schemas.registry_config) if confluent else None
    return AvroCodec(schemas.input, writers, schemas.max_record_bytes)
