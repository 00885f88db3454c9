"""The worker's score log and where scores live: what the checkpoint writes, what a label finds."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamer.metrics import Metrics
from streamer.quality.scores import VALUE, ScoreLayout, ScoreLog, unpack
from streamer.quality.settings import QualitySettings

DAY_S = 86_400.0


def batch(start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([f"e{i}" for i in range(start, start + n)], dtype=object)
    return ids, np.linspace(0, 1, n), np.full(n, 4), np.arange(start, start + n) * 1000


class FakePipeline:
    """Hashes in a dict, with the commands a pipeline would queue: pure, for the layout alone."""

    def __init__(self, hashes: dict[str, dict[str, bytes]], expiries: dict[str, int]) -> None:
        self.hashes, self.expiries, self.replies = hashes, expiries, []

    def hset(self, key: str, items: list[Any]) -> None:
        self.hashes.setdefault(key, {}).update(zip(items[0::2], items[1::2], strict=True))

    def pexpireat(self, key: str, when_ms: int) -> None:
        self.expiries[key] = when_ms

    def hmget(self, key: str, names: list[str]) -> None:
        self.replies.append([self.hashes.get(key, {}).get(n) for n in names])


def test_pending_scores_go_to_bucket_hashes_of_the_current_generation() -> None:
    log = ScoreLog("pfx", QualitySettings(label_horizon_s=DAY_S), Metrics.create())
    log.layout.wall = lambda: 10.5 * DAY_S
    log.add(*batch(0, 300))
    log.add(*batch(300, 2))
    pending = log.take()
    assert pending is not None and pending.event_ids == [f"e{i}" for i in range(302)]
    hashes: dict[str, dict[str, bytes]] = {}
    expiries: dict[str, int] = {}
    pending.queue_write(FakePipeline(hashes, expiries))
    assert sum(len(h) for h in hashes.values()) == 302 and all(k.endswith(":10") for k in hashes)
    assert set(expiries.values()) == {int(12 * DAY_S * 1000)}  # the end of the next generation
    log.written(pending)
    assert len(log) == 0 and log.take() is None


def test_a_score_is_found_for_one_to_two_horizons_then_it_is_unknown() -> None:
    hashes: dict[str, dict[str, bytes]] = {}
    writer = ScoreLayout("pfx", DAY_S, wall=lambda: 10.9 * DAY_S)
    values = np.zeros(3, VALUE)
    values["score"] = [0.1, 0.5, 0.9]
    writer.queue_write(FakePipeline(hashes, {}), ["a", "b", "c"], values)

    def lookup(now_days: float) -> list[Any]:
        reader = ScoreLayout("pfx", DAY_S, wall=lambda: now_days * DAY_S)
        pipe = FakePipeline(hashes, {})
        read = reader.queue_read(pipe, ["c", "x", "a"])
        return read(pipe.replies)

    for now in (10.0, 10.95, 11.9, 9.99):  # the writer's clock may run ahead of the reader's
        found, got = unpack(lookup(now))
        assert found.tolist() == [True, False, True] and got["score"].tolist() == [0.9, 0.1]
    assert not unpack(lookup(12.1))[0].any()  # Redis has expired it by then; the reader no longer looks


def test_an_unwritten_checkpoint_keeps_the_scores_and_the_oldest_go_past_the_bound() -> None:
    metrics = Metrics.create()
    log = ScoreLog("pfx", QualitySettings(max_pending=5), metrics)
    log.add(*batch(0, 3))
    failed = log.take()
    assert failed is not None
    log.add(*batch(3, 3))  # added while the write was under way
    log.restore(failed)  # 6 > 5: the oldest batch goes
    pending = log.take()
    assert pending is not None and pending.event_ids == [f"e{i}" for i in range(3, 6)]
    assert metrics.quality_scores_dropped._value.get() == 3
