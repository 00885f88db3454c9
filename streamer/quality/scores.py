"""The worker's side of quality: each scored event's score, kept in Redis until its label comes.

Per event one Redis string, `<features.key_prefix>:score:<event id>`, holding 24 bytes (score
as a float64, the deciding model version and the event time as int64, little-endian), expiring
`quality.label_horizon_s` after it is written. The worker collects them per batch in memory and
writes them at the checkpoint, in the pipeline that writes the entity state snapshots
(`FeatureStore.persist`): no round trip of their own, and none per batch. They are written
before the offsets of their events commit, so a label for a committed event finds its score
(once the label consumer reads it). A replayed event gets the same score and writes the same
value again.

A failed write keeps the scores for the next checkpoint, up to `quality.max_pending`; it never
holds back a commit (quality is a side output; the entity state is what commits wait for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.metrics import Metrics
from streamer.quality.settings import QualitySettings

VALUE = np.dtype([("score", "<f8"), ("model_version", "<i8"), ("event_time", "<i8")])


def score_key(prefix: str, event_id: str) -> str:
    return f"{prefix}:score:{event_id}"


def unpack(replies: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Which replies hold a score (a GET of an expired or unknown event gives None), and those
    scores as a `VALUE` array."""
    found = np.fromiter((r is not None and len(r) == VALUE.itemsize for r in replies), bool, len(replies))
    joined = b"".join(r for r, ok in zip(replies, found.tolist(), strict=True) if ok and r is not None)
    return found, np.frombuffer(joined, VALUE)


@dataclass(frozen=True)
class PendingScores:
    keys: list[str]
    values: np.ndarray  # VALUE, one per key
    ttl_ms: int


class ScoreLog:
    """Scores of the events produced since the last checkpoint that wrote them."""

    def __init__(self, key_prefix: str, settings: QualitySettings, metrics: Metrics) -> None:
        self.key_prefix = key_prefix
        self.settings = settings
        self.metrics = metrics
        self._ids: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(
        self, event_ids: np.ndarray, scores: np.ndarray, model_versions: np.ndarray, event_times: np.ndarray
    ) -> None:
        values = np.empty(len(event_ids), VALUE)
        values["score"], values["model_version"], values["event_time"] = scores, model_versions, event_times
        self._ids.append(np.asarray(event_ids, dtype=object))
        self._values.append(values)
        self._count += len(values)
        while self._count > self.settings.max_pending and len(self._ids) > 1:  # Redis has been away a while
            dropped = len(self._ids.pop(0))
            self._values.pop(0)
            self._count -= dropped
            self.metrics.quality_scores_dropped.inc(dropped)

    def pending(self) -> PendingScores | None:
        if not self._count:
            return None
        self._ids, self._values = [np.concatenate(self._ids)], [np.concatenate(self._values)]  # one piece now
        keys = [score_key(self.key_prefix, i) for i in self._ids[0].tolist()]
        return PendingScores(keys, self._values[0], round(self.settings.label_horizon_s * 1000))

    def written(self) -> None:
        self.metrics.quality_scores_written.inc(self._count)
        self._ids, self._values, self._count = [], [], 0
