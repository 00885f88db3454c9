"""The worker's side of quality: each scored event's score, kept in Redis until its label comes.

Layout. A score is a field of a hash, the event id its name and 24 bytes its value (score as a
float64, the deciding model version and the event time as int64, little-endian): one hash per
bucket of event ids (`BUCKETS`, the key's hash tag, so each lives in one Redis Cluster slot) and
per expiry generation. Hashes rather than a key per event for the reason the entity snapshots
use them (`streamer.snapshots`): Redis spends several µs per `SET … PX` against about one per
field of an `HSET`, and here it is one write per event. Expiry: time is cut into generations of
`quality.label_horizon_s`; a score goes to the hash of the generation it is written in, which
expires at the end of the next one, so a score is kept between one and two horizons. A label is
looked up in the hashes of the generations around now; a replayed event writes the same value
again, so any copy found is the right one.

Writes. The worker collects the scores per batch in memory and writes them at the checkpoint,
in the pipeline that writes the entity state snapshots (`FeatureStore.persist`): no round trip
of their own, and none per batch. They are written before the offsets of their events commit.
A failed write keeps them for the next checkpoint, up to `quality.max_pending`; it never holds
back a commit (quality is a side output; the entity state is what commits wait for).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.metrics import Metrics
from streamer.quality.settings import QualitySettings

VALUE = np.dtype([("score", "<f8"), ("model_version", "<i8"), ("event_time", "<i8")])
BUCKETS = 64  # hashes per generation: a 30-day horizon at 1,000 events/s puts ~40 M fields in each


class ScoreLayout:
    """Where scores live in Redis (see the module docstring); the worker writes, the label consumer reads."""

    def __init__(self, key_prefix: str, horizon_s: float, wall: Callable[[], float] = time.time) -> None:
        self.base = f"{key_prefix}:score"
        self.horizon_s = horizon_s
        self.wall = wall

    def generation(self) -> int:
        return int(self.wall() // self.horizon_s)

    def _buckets(self, event_ids: list[str]) -> np.ndarray:
        return np.fromiter((zlib.crc32(i.encode()) % BUCKETS for i in event_ids), np.int64, len(event_ids))

    def _key(self, bucket: int, generation: int) -> str:
        return f"{self.base}:{{{bucket}}}:{generation}"

    def queue_write(self, pipe: Any, event_ids: list[str], values: np.ndarray) -> None:
        """One HSET and one expiry per bucket, into the current generation. The fields and values
        are laid out by numpy, sorted by bucket: a dict per bucket cost three times as much."""
        generation = self.generation()
        ends_ms = int((generation + 2) * self.horizon_s * 1000)  # the end of the next generation
        buckets = self._buckets(event_ids)
        order = np.argsort(buckets, kind="stable")
        items = np.empty(2 * len(event_ids), dtype=object)  # field, value, field, value, ...
        items[0::2] = np.asarray(event_ids, dtype=object)[order]
        items[1::2] = values[order].view(f"V{VALUE.itemsize}").tolist()  # 24 bytes each
        start = 0
        for bucket, end in enumerate(np.cumsum(np.bincount(buckets, minlength=BUCKETS)).tolist()):
            if end > start:
                key = self._key(bucket, generation)
                pipe.hset(key, items=items[2 * start : 2 * end].tolist())
                pipe.pexpireat(key, ends_ms)
            start = end

    def queue_read(self, pipe: Any, event_ids: list[str]) -> Callable[[list[Any]], list[bytes | None]]:
        """Queue one HMGET per bucket and generation around now; the returned function turns the
        replies into each event's value, or None where no generation holds it."""
        now = self.generation()
        buckets = self._buckets(event_ids)
        groups = [(int(b), np.flatnonzero(buckets == b)) for b in np.unique(buckets).tolist()]
        for bucket, rows in groups:
            names = [event_ids[r] for r in rows.tolist()]
            for generation in (now - 1, now, now + 1):  # +1: the writer's clock may run ahead
                pipe.hmget(self._key(bucket, generation), names)

        def read(replies: list[Any]) -> list[bytes | None]:
            found: list[bytes | None] = [None] * len(event_ids)
            for g, (_, rows) in enumerate(groups):
                for reply in replies[3 * g : 3 * g + 3]:
                    for row, value in zip(rows.tolist(), reply, strict=True):
                        if value is not None:
                            found[row] = value
            return found

        return read


def unpack(replies: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Which replies hold a score (None: unknown or expired), and those scores as a `VALUE` array."""
    found = np.fromiter((r is not None and len(r) == VALUE.itemsize for r in replies), bool, len(replies))
    joined = b"".join(r for r, ok in zip(replies, found.tolist(), strict=True) if ok and r is not None)
    return found, np.frombuffer(joined, VALUE)


@dataclass(frozen=True)
class PendingScores:
    event_ids: list[str]
    values: np.ndarray  # VALUE, one per event
    layout: ScoreLayout

    def queue_write(self, pipe: Any) -> None:
        self.layout.queue_write(pipe, self.event_ids, self.values)


class ScoreLog:
    """Scores of the events produced since the last checkpoint that wrote them."""

    def __init__(self, key_prefix: str, settings: QualitySettings, metrics: Metrics) -> None:
        self.layout = ScoreLayout(key_prefix, settings.label_horizon_s)
        self.settings = settings
        self.metrics = metrics
        self._ids: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, event_ids: np.ndarray, scores: np.ndarray, versions: np.ndarray, event_times: np.ndarray) -> None:
        values = np.empty(len(event_ids), VALUE)
        values["score"], values["model_version"], values["event_time"] = scores, versions, event_times
        self._ids.append(np.asarray(event_ids, dtype=object))
        self._values.append(values)
        self._count += len(values)
        self._drop_past_bound()

    def _drop_past_bound(self) -> None:
        while self._count > self.settings.max_pending and len(self._ids) > 1:  # Redis has been away a while
            dropped = len(self._ids.pop(0))
            self._values.pop(0)
            self._count -= dropped
            self.metrics.quality_scores_dropped.inc(dropped)

    def take(self) -> PendingScores | None:
        """The scores to write with a checkpoint's snapshot, no longer held here: scores added
        while the write is under way wait for the next one. `restore` them if it fails."""
        if not self._count:
            return None
        pending = PendingScores(np.concatenate(self._ids).tolist(), np.concatenate(self._values), self.layout)
        self._ids, self._values, self._count = [], [], 0
        return pending

    def restore(self, pending: PendingScores) -> None:
        """A failed write's scores, back before those added since; the bound applies again."""
        self._ids.insert(0, np.asarray(pending.event_ids, dtype=object))
        self._values.insert(0, pending.values)
        self._count += len(pending.values)
        self._drop_past_bound()

    def written(self, pending: PendingScores) -> None:
        self.metrics.quality_scores_written.inc(len(pending.values))
