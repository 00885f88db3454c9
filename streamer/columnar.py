"""Avro binary ↔ columns for a whole batch at once, in numpy: the fast path of `codec`.

Records of primitive fields and [null, T] unions only; the codec keeps fastavro for every other
schema and for every record this path flags. Both directions are checked against fastavro
(byte for byte when writing, outcome for outcome when reading) in tests/unit/test_columnar.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from streamer.records import Columns

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
INT32_RANGE = (-(2**31), 2**31 - 1)


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
            self.ok &= ((values >= INT32_RANGE[0]) & (values <= INT32_RANGE[1])) | ~rows
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
