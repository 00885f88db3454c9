"""The checkpoint's ordering rules, with in-memory stand-ins for the source and sink."""

from typing import Any, cast

import numpy as np
import pytest

from streamer.errors import OutputsLost
from streamer.kafka.offsets import Checkpoint
from streamer.kafka.producer import Refusal


class RecordingSource:
    def __init__(self, assigned: set[int]) -> None:
        self.assigned = assigned
        self.commits: list[dict[int, int]] = []

    def commit(self, next_offsets: dict[int, int]) -> None:
        self.commits.append(dict(next_offsets))


class Sink:
    transactional = False

    def __init__(self, fail: bool = False, refused: list[Refusal] | None = None) -> None:
        self.fail = fail
        self.flushes = 0
        self.refused = refused or []

    def take_refused(self) -> list[Refusal]:
        refused, self.refused = self.refused, []
        return refused

    def flush(self, timeout_s: float) -> None:
        self.flushes += 1
        if self.fail:
            raise OutputsLost("1 outputs not delivered")


def checkpoint(source: RecordingSource, sink: Sink, on_refused: Any = None) -> Checkpoint:
    handler = on_refused or (lambda refused: None)
    return Checkpoint(cast(Any, source), cast(Any, sink), interval_s=1.0, flush_timeout_s=1.0, on_refused=handler)


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


def test_refused_outputs_are_handed_on_and_their_letters_flushed_before_the_commit() -> None:
    source = RecordingSource({0})
    refusal = Refusal("scored", b"k", b"v", "MSG_SIZE_TOO_LARGE")
    sink = Sink(refused=[refusal])
    handed: list[list[Refusal]] = []
    cp = checkpoint(source, sink, handed.append)
    cp.mark_processed(np.array([0]), np.array([3]))
    assert cp.commit({}) == {0: 4}  # a refusal is not a rewind: the offsets commit
    assert handed == [[refusal]]
    assert sink.flushes == 2  # the dead letters standing for the refused outputs are flushed first
    assert source.commits == [{0: 4}]
