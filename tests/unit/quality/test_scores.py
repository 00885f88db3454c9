"""The worker's score log: what it hands the checkpoint, and what it drops when Redis stays away."""

from __future__ import annotations

import numpy as np

from streamer.metrics import Metrics
from streamer.quality.scores import ScoreLog, unpack
from streamer.quality.settings import QualitySettings


def batch(start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([f"e{i}" for i in range(start, start + n)], dtype=object)
    return ids, np.linspace(0, 1, n), np.full(n, 4), np.arange(start, start + n) * 1000


def test_pending_scores_are_keyed_by_event_id_with_the_label_horizon() -> None:
    log = ScoreLog("pfx", QualitySettings(label_horizon_s=86400), Metrics.create())
    log.add(*batch(0, 3))
    log.add(*batch(3, 2))
    pending = log.pending()
    assert pending is not None
    assert pending.keys == [f"pfx:score:e{i}" for i in range(5)] and pending.ttl_ms == 86_400_000
    found, values = unpack([v.tobytes() for v in pending.values])
    assert found.all() and values["model_version"].tolist() == [4] * 5 and values["event_time"][-1] == 4000
    log.written()
    assert len(log) == 0 and log.pending() is None


def test_an_unwritten_checkpoint_keeps_the_scores_and_the_oldest_go_past_the_bound() -> None:
    metrics = Metrics.create()
    log = ScoreLog("pfx", QualitySettings(max_pending=5), metrics)
    log.add(*batch(0, 3))
    assert log.pending() is not None  # the write failed: not `written`
    log.add(*batch(3, 3))  # 6 > 5: the oldest batch goes
    pending = log.pending()
    assert pending is not None and pending.keys == [f"pfx:score:e{i}" for i in range(3, 6)]
    assert metrics.quality_scores_dropped._value.get() == 3
