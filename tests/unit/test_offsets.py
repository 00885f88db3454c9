"""The checkpoint's ordering rules, with in-memory stand-ins for the source and sink."""

from typing import Any, cast

import numpy as np
import pytest

from streamer.errors import OutputsLost
from streamer.kafka.offsets import Checkpoint


class RecordingSource:
    def __init__(self, assigned: set[int]) -> None:
        self.assigned = assigned
        self.commits: list[dict[int, int]] = []

    def commit(self, next_offsets: dict[int, int]) -> None:
        self.commits.append(dict(next_offsets))


class Sink:
    transactional = False

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.flushes = 0

    def flush(self, timeout_s: float) -> None:
        self.flushes += 1
        if self.fail:
            raise OutputsLost("1 outputs not delivered")


def checkpoint(source: RecordingSource, sink: Sink) -> Checkpoint:
    return Checkpoint(cast(Any, source), cast(Any, sink), interval_s=1.0, flush_timeout_s=1.0)


def test_commits_next_offset_per_owned_partition_after_flush() -> None:
    source, sink = RecordingSource({0, 1}), Sink()
    cp = checkpoint(source, sink)
    cp.mark_processed(np.array([0, 0, 1, 2]), np.array([5, 6, 9, 3]))
    assert cp.commit({}) == {0: 7, 1: 10}  # partition 2 is not ours: never committed
    assert sink.flushes == 1
    assert source.commits == [{0: 7, 1: 10}]


def test_failed_flush_commits_nothing() -> None:
    source = RecordingSource({0})
    cp = checkpoint(source, Sink(fail=True))
    cp.mark_processed(np.array([0]), np.array([5]))
    with pytest.raises(OutputsLost):
        cp.commit({})
    assert source.commits == []


def test_commit_stops_at_pending_event_and_keeps_the_rest_for_later() -> None:
    source = RecordingSource({0})
    cp = checkpoint(source, Sink())
    cp.mark_processed(np.array([0]), np.array([11]))  # a dead letter ahead of pending offset 10
    assert cp.commit({0: 10}) == {0: 10}
    assert cp.commit({}) == {0: 12}


def test_forgotten_partitions_are_not_committed() -> None:
    source = RecordingSource({0, 1})
    cp = checkpoint(source, Sink())
    cp.mark_processed(np.array([0, 1]), np.array([1, 1]))
    cp.forget([1])
    assert cp.commit({}) == {0: 2}
