"""What flows between the stages: frozen, columnar, free of librdkafka objects."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

Columns = dict[str, np.ndarray]
RecordHeaders = list[tuple[str, bytes | None]]  # as librdkafka hands them over


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of Avro timestamp-millis fields."""
    return time.time_ns() // 1_000_000


def has_id(column: np.ndarray) -> np.ndarray:
    """Rows whose id is neither null nor empty, the only ids that may key state: every null
    would otherwise share one key (`…:{None}`), and every empty id another."""
    if column.dtype != object:
        return np.ones(len(column), dtype=bool)  # a numeric id is always there
    return np.asarray((column != None) & (column != ""), dtype=bool)  # noqa: E711 - elementwise null test


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Messages of one poll, as columns; values are the undecoded Avro bytes."""

    topic: str
    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[RecordHeaders | None] | None = None  # read only when tracing is on (streamer.tracing)

    def __len__(self) -> int:
        return len(self.values)


class Rejection(NamedTuple):
    """Why one decoded event is not scored: the dead letter's error class and message."""

    error_class: str
    reason: str


Rejections = dict[int, Rejection]  # by row of the batch they refuse


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Decoded events as columns, with where each came from (for commits and outputs)."""

    columns: Columns
    partitions: np.ndarray
    offsets: np.ndarray
    keys: list[bytes | None]
    values: list[bytes | None] | None = None  # the input bytes, for a dead letter if the model rejects one
    headers: list[RecordHeaders | None] | None = None  # the input headers, when tracing is on

    def __len__(self) -> int:
        return len(self.offsets)

    def with_columns(self, extra: Columns) -> EventBatch:
        if not extra:
            return self
        return EventBatch(
            {**self.columns, **extra}, self.partitions, self.offsets, self.keys, self.values, self.headers
        )

    def take(self, rows: np.ndarray | slice) -> EventBatch:
        """Rows by slice, boolean mask or index array."""
        values, headers = self.values, self.headers
        if isinstance(rows, slice):
            keys = self.keys[rows]
            values = None if values is None else values[rows]
            headers = None if headers is None else headers[rows]
        else:
            index = np.flatnonzero(rows) if rows.dtype == bool else rows
            keys = [self.keys[i] for i in index]
            values = None if values is None else [values[i] for i in index]
            headers = None if headers is None else [headers[i] for i in index]
        return EventBatch(
            {name: col[rows] for name, col in self.columns.items()},
            self.partitions[rows],
            self.offsets[rows],
            keys,
            values,
            headers,
        )

    def dead_letter(self, row: int, topic: str, refusal: Rejection) -> DeadLetter:
        """One row refused after decoding, with its input bytes and the reason."""
        value = None if self.values is None else self.values[row]
        headers = None if self.headers is None else self.headers[row]
        partition, offset = int(self.partitions[row]), int(self.offsets[row])
        return DeadLetter(topic, partition, offset, self.keys[row], value, *refusal, headers)

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        if len(batches) == 1:
            return batches[0]
        return EventBatch(
            {name: np.concatenate([b.columns[name] for b in batches]) for name in batches[0].columns},
            np.concatenate([b.partitions for b in batches]),
            np.concatenate([b.offsets for b in batches]),
            [key for b in batches for key in b.keys],
            None if any(b.values is None for b in batches) else [v for b in batches for v in b.values or ()],
            None if any(b.headers is None for b in batches) else [h for b in batches for h in b.headers or ()],
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One input record that cannot be scored, with the reason."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error_class: str
    error_message: str
    headers: RecordHeaders | None = None  # the input's, for its trace context (streamer.tracing)


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """A batch with the model's verdict, ready to encode."""

    events: EventBatch
    values: dict[str, np.ndarray]  # selected signature outputs: [n] numbers, [n, k] arrays, str ids as objects
    scores: np.ndarray  # float64: the first selected output's numbers (their largest), for drift and shadow
    model_name: str
    model_versions: np.ndarray  # int64: the version whose score is the decision, per event
    scored_at_ms: int
    features_degraded: np.ndarray | bool = False  # per event, or for all of them
    shadow_scores: np.ndarray | None = None  # float64, NaN where the shadow did not score
    shadow_version: int | None = None
