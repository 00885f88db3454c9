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
_VARINT_BYTES = 10  # a zigzag long takes at most 10 seven-bit groups


def _zigzag_varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Avro `long` encoding of every value at once: (bytes of all values in order, length of each)."""
    v = values.astype(np.int64)
    z = ((v << 1) ^ (v >> 63)).view(np.uint64)
    lengths = np.ones(len(z), dtype=np.int64)
    for k in range(1, _VARINT_BYTES):  # one more byte for each 7 bits above the first 7
        lengths += z >= np.uint64(1 << (7 * k))
    widest = int(lengths.max()) if len(z) else 1
    groups = np.stack([(z >> np.uint64(7 * k)) & np.uint64(0x7F) for k in range(widest)], axis=1)
    more = np.arange(widest) < (lengths - 1)[:, None]  # continuation bit on all but the last byte
    encoded = (groups | np.where(more, np.uint64(0x80), np.uint64(0))).astype(np.uint8)
    return encoded[np.arange(widest) < lengths[:, None]], lengths


def _flat_fields(field_types: Mapping[str, Any], supported: frozenset[str]) -> list[tuple[str, str, bool]]:
    """(name, type, nullable) per field, for records of primitive fields and [null, T] unions;
    ValueError names the first field outside `supported`."""
    fields = []
    for name, avro_type in field_types.items():
        nullable = isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null"
        base = avro_type[1] if nullable else avro_type
        if not isinstance(base, str) or base not in supported:
            raise ValueError(f"field {name}: {avro_type} is not a type the columnar codec covers")
        fields.append((name, base, nullable))
    return fields


_COLUMNAR_TYPES = frozenset({"string", "int", "long", "double", "boolean"})


class ColumnEncoder:
    """Avro binary records from columns, vectorized: each field of every row is encoded by one
    numpy pass, the pieces are scattered into one buffer, and the buffer is sliced into records.
    Covers records of string, int, long, double and boolean fields and their [null, T] unions
    (the scored-event schema); fastavro's per-row writer cost 6 µs a record, this about 1.
    Byte-for-byte equal to `schemaless_writer` (tested)."""

    def __init__(self, field_types: Mapping[str, Any]) -> None:
        self.fields = _flat_fields(field_types, _COLUMNAR_TYPES)

    def encode(self, columns: Mapping[str, Any], n: int) -> list[bytes]:
        pieces: list[tuple[np.ndarray, np.ndarray]] = []  # per piece: bytes in row order, length per row
        for name, base, nullable in self.fields:
            column = columns[name]
            if not nullable:
                pieces.extend(self._values(base, column))
                continue
            present = np.fromiter((value is not None for value in column), dtype=bool, count=n)
            pieces.append(_zigzag_varints(present.astype(np.int64)))  # union branch: 0 null, 1 value
            for data, length in self._values(base, [value for value in column if value is not None]):
                full = np.zeros(n, dtype=np.int64)  # null rows take no bytes for the value
                full[present] = length
                pieces.append((data, full))
        lengths = np.stack([length for _, length in pieces], axis=1)
        row_ends = np.cumsum(lengths.sum(axis=1))
        row_starts = row_ends - lengths.sum(axis=1)
        piece_offsets = row_starts[:, None] + np.cumsum(lengths, axis=1) - lengths
        buffer = np.empty(int(row_ends[-1]) if n else 0, dtype=np.uint8)
        for j, (data, length) in enumerate(pieces):
            if len(data):
                within = np.arange(len(data)) - np.repeat(np.cumsum(length) - length, length)
                buffer[within + np.repeat(piece_offsets[:, j], length)] = data
        flat = buffer.tobytes()
        return [flat[a:b] for a, b in zip(row_starts.tolist(), row_ends.tolist(), strict=True)]

    @staticmethod
    def _values(base: str, column: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """One field's values as pieces: (bytes of every value in order, length of each)."""
        if base == "string":  # a length, then the UTF-8 bytes
            joined = "".join(column)
            if joined.isascii():  # a byte per character: one encode for the column
                sizes = np.fromiter(map(len, column), dtype=np.int64, count=len(column))
                data = joined.encode("ascii")
            else:
                text = [value.encode() for value in column]
                sizes = np.fromiter(map(len, text), dtype=np.int64, count=len(text))
                data = b"".join(text)
            return [_zigzag_varints(sizes), (np.frombuffer(data, dtype=np.uint8), sizes)]
        if base in ("int", "long"):
            return [_zigzag_varints(np.asarray(column, dtype=np.int64))]
        if base == "double":
            values = np.ascontiguousarray(np.asarray(column, dtype="<f8"))
            return [(values.view(np.uint8), np.full(len(values), 8, dtype=np.int64))]
        flags = np.asarray(column, dtype=bool).astype(np.uint8)  # boolean
        return [(flags, np.ones(len(flags), dtype=np.int64))]


# Below this, a batch's numpy passes (a fixed ~0.4 ms per batch) cost more than fastavro's ~6 µs
# per record; at low rates batches are small and this is their latency.
COLUMNAR_MIN_RECORDS = 96

_STEPS = np.arange(_VARINT_BYTES)
_SHIFTS = (7 * _STEPS).astype(np.uint64)
_INT32 = (-(2**31), 2**31 - 1)


class ColumnDecoder:
    """Avro binary records into columns, vectorized: every record of a batch is read at once,
    field by field, each field by one numpy pass that follows one read position per record.
    fastavro's `schemaless_reader` builds a dict per record (6.8 µs a demo event of 15 fields at batch 1024);
    this takes 2.5, most of it making the Python strings the model and the Redis keys take.

    It decodes only what it can vouch for. A record with a varint longer than 10 bytes, a length
    past its end, a union branch other than 0 or 1, a boolean byte other than 0 or 1, an int out
    of range, non-UTF-8 text or bytes left over is flagged, not guessed at: the codec reads the
    flagged records again with fastavro, which decodes them or says why they are malformed. So
    this changes how fast records are read, never what they read as (tested against fastavro).
    Covers the same schemas as `ColumnEncoder`."""

    def __init__(self, field_types: Mapping[str, Any]) -> None:
        self.fields = _flat_fields(field_types, _COLUMNAR_TYPES)

    def decode(self, values: list[bytes], skip: int = 0) -> tuple[Columns, np.ndarray]:
        """(columns of every record, a mask of the records they are right for). `skip`: header
        bytes before each record's body (5 for Confluent framing)."""
        n = len(values)
        sizes = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(sizes)
        flat = b"".join(values)
        # Padding keeps every fixed-width read of a clamped position inside the buffer.
        read = _BatchReader(flat, np.frombuffer(flat + bytes(_VARINT_BYTES), dtype=np.uint8), ends - sizes + skip, ends)
        columns: Columns = {}
        for name, base, nullable in self.fields:
            if not nullable:
                columns[name] = read.value(base, np.ones(n, dtype=bool))
                continue
            branch = read.long(np.ones(n, dtype=bool))
            read.ok &= (branch == 0) | (branch == 1)
            present = branch == 1
            column = np.full(n, None, dtype=object)
            column[present] = read.value(base, present)[present]
            columns[name] = column
        read.ok &= read.pos == ends
        return columns, read.ok


class _BatchReader:
    """Read positions into one buffer of many records, advanced field by field for all at once;
    `ok` turns off for a record as soon as one of its reads is out of bounds or invalid."""

    def __init__(self, flat: bytes, buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.flat, self.buffer, self.ends = flat, buffer, ends
        self.ok = starts <= ends
        self.pos = np.minimum(starts, ends)
        self._text: str | None = None
        self._non_ascii: np.ndarray | None = None

    def _advance(self, rows: np.ndarray, width: np.ndarray | int) -> None:
        """Move `rows` on by `width`; a record read past its end is flagged and held at the end."""
        moved = np.where(rows, self.pos + width, self.pos)
        self.ok &= moved <= self.ends
        self.pos = np.minimum(moved, self.ends)

    def long(self, rows: np.ndarray) -> np.ndarray:
        first = self.buffer[self.pos]
        if (first < 0x80).all():  # lengths, union branches and small numbers: one byte each
            zigzag = first.astype(np.uint64)
            self._advance(rows, 1)
        else:
            window = self.buffer[self.pos[:, None] + _STEPS]
            last = window < 0x80  # the byte without a continuation bit ends the varint
            width = last.argmax(axis=1) + 1
            # Ten groups hold 70 bits; a tenth byte above 1 overflows 64, which fastavro must judge.
            self.ok &= (last.any(axis=1) & ((width < _VARINT_BYTES) | (window[:, -1] <= 1))) | ~rows
            widest = int(width.max())
            groups = (window[:, :widest] & 0x7F).astype(np.uint64) << _SHIFTS[:widest]
            zigzag = np.where(width[:, None] > _STEPS[:widest], groups, np.uint64(0)).sum(axis=1, dtype=np.uint64)
            self._advance(rows, width)
        return (zigzag >> np.uint64(1)).view(np.int64) ^ -(zigzag & np.uint64(1)).view(np.int64)

    def value(self, base: str, rows: np.ndarray) -> np.ndarray:
        """One field of `rows`; other records do not move and get placeholders."""
        if base == "string":
            return self._strings(rows)
        if base in ("int", "long"):
            values = self.long(rows)
            if base == "long":
                return values
            self.ok &= ((values >= _INT32[0]) & (values <= _INT32[1])) | ~rows
            return values.astype(np.int32)
        width = 8 if base == "double" else 1
        raw = self.buffer[self.pos[:, None] + np.arange(width)]
        self._advance(rows, width)
        if base == "double":
            return np.ascontiguousarray(raw).view("<f8").ravel()
        self.ok &= (raw[:, 0] <= 1) | ~rows  # boolean
        return raw[:, 0].astype(bool)

    def _strings(self, rows: np.ndarray) -> np.ndarray:
        lengths = self.long(rows)
        self.ok &= ((lengths >= 0) & (lengths <= self.ends - self.pos)) | ~rows
        lengths = np.where(rows & self.ok, lengths, 0)
        starts = self.pos
        self._advance(rows, lengths)
        ends = starts + lengths
        if self._text is None:  # latin-1 maps byte i to character i, so byte offsets index the text
            self._text = self.flat.decode("latin-1")
            self._non_ascii = np.concatenate(([0], np.cumsum(self.buffer >= 0x80)))
        text, non_ascii = self._text, self._non_ascii
        assert non_ascii is not None
        column = np.array([text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)], dtype=object)
        for row in np.flatnonzero((non_ascii[ends] > non_ascii[starts]) & rows).tolist():
            try:
                column[row] = self.flat[starts[row] : ends[row]].decode("utf-8")
            except UnicodeDecodeError:
                self.ok[row] = False
        return column


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
            if number is not None and not _INT32[0] <= number <= _INT32[1]:
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
