"""The worker's aggregate state and its snapshots, with the snapshot store as a dict: what a
replay after each kind of fault reads back."""

import numpy as np
import pytest

from streamer.aggregates import AggregateGroup, replay_aggregates
from streamer.entity_state import EntityState
from streamer.records import Columns, EventBatch
from tests.unit.test_aggregates import FEATURES, stream

CARD = AggregateGroup.of(FEATURES)[0]


class Redis(dict[tuple[str, str], bytes]):
    """The snapshot store: what `FeatureStore` writes and reads, one generation."""

    def write(self, state: EntityState, offsets: dict[int, int]) -> None:
        snapshot = state.snapshot(offsets)
        for key, value in zip(snapshot.keys, snapshot.values, strict=True):
            self[key] = value.tobytes()
        state.written(snapshot, np.zeros(len(snapshot.keys), np.int64))


def new_state() -> EntityState:
    return EntityState(CARD, "t", lambda entity, p: (str(p), entity))


def batch(columns: Columns, start: int, stop: int, partitions: np.ndarray) -> EventBatch:
    offsets = np.zeros(len(partitions), np.int64)
    for p in np.unique(partitions):
        offsets[partitions == p] = np.arange((partitions == p).sum())  # per partition, in order
    rows = slice(start, stop)
    part = {k: v[rows] for k, v in columns.items()}
    return EventBatch(part, partitions[rows], offsets[rows], [None] * (stop - start))


def enrich(state: EntityState, redis: Redis, events: EventBatch) -> Columns:
    plan = state.plan(events)
    state.load(plan, [redis.get(k) for k in plan.keys], np.zeros(len(plan.keys), np.int64))
    columns, skipped = state.advance(events, plan)
    assert skipped == 0
    return columns


def next_offsets(events: EventBatch) -> dict[int, int]:
    return {int(p): int(events.offsets[events.partitions == p].max()) + 1 for p in np.unique(events.partitions)}


def checkpointed(state: EntityState, redis: Redis, events: EventBatch) -> None:
    """Events enriched, their snapshot written and its offsets committed."""
    enrich(state, redis, events)
    redis.write(state, next_offsets(events))
    state.committed()


def assert_same(got: Columns, expected: Columns) -> None:
    for name, column in expected.items():
        np.testing.assert_array_equal(got[name], column, err_msg=name)


@pytest.fixture
def columns() -> Columns:
    return stream(900, seed=5, cards=40)


@pytest.fixture
def partitions(columns: Columns) -> np.ndarray:
    """Keyed by card: each card's events in one partition."""
    return np.array([int(c[1:]) % 3 for c in columns["card"]], dtype=np.int32)


def test_values_equal_the_offline_twin_across_batches(columns: Columns, partitions: np.ndarray) -> None:
    state, redis = new_state(), Redis()
    parts = [enrich(state, redis, batch(columns, i, i + 128, partitions)) for i in range(0, 900, 128)]
    twin = replay_aggregates(CARD.features, columns, "t")
    assert_same({name: np.concatenate([p[name] for p in parts]) for name in twin}, twin)


def test_a_restart_from_the_committed_snapshot_reads_the_same_values(columns: Columns, partitions: np.ndarray) -> None:
    first, redis = new_state(), Redis()
    checkpointed(first, redis, batch(columns, 0, 300, partitions))
    later = batch(columns, 300, 600, partitions)
    expected = enrich(first, redis, later)
    assert_same(enrich(new_state(), redis, later), expected)  # a new process: everything read from the snapshots


def test_a_crash_between_the_snapshot_and_the_commit_reads_the_committed_version(
    columns: Columns, partitions: np.ndarray
) -> None:
    state, redis = new_state(), Redis()
    for start, stop in ((0, 200), (200, 400)):  # two committed checkpoints
        checkpointed(state, redis, batch(columns, start, stop, partitions))
    replayed = batch(columns, 400, 700, partitions)
    expected = enrich(state, redis, replayed)
    redis.write(state, next_offsets(replayed))  # written, then the process dies before the commit
    assert_same(enrich(new_state(), redis, replayed), expected)


def test_a_failed_commit_keeps_the_committed_version_until_one_succeeds(
    columns: Columns, partitions: np.ndarray
) -> None:
    """Two snapshots in a row without a commit between: the committed version must survive both."""
    state, redis = new_state(), Redis()
    checkpointed(state, redis, batch(columns, 0, 200, partitions))
    replayed = [batch(columns, 200, 400, partitions), batch(columns, 400, 600, partitions)]
    expected = []
    for events in replayed:
        expected.append(enrich(state, redis, events))
        redis.write(state, next_offsets(events))  # the offset commit fails each time
    fresh = new_state()
    for events, values in zip(replayed, expected, strict=True):
        assert_same(enrich(fresh, redis, events), values)


def test_forget_on_rewind_reads_back_the_state_at_the_commit(columns: Columns, partitions: np.ndarray) -> None:
    state, redis = new_state(), Redis()
    checkpointed(state, redis, batch(columns, 0, 300, partitions))
    aborted = batch(columns, 300, 500, partitions)
    expected = enrich(state, redis, aborted)
    redis.write(state, next_offsets(aborted))  # the transaction then aborts
    state.forget([0, 1, 2])
    assert len(state) == 0 and not state.floors
    assert_same(enrich(state, redis, aborted), expected)


def test_forget_keeps_the_other_partitions(columns: Columns, partitions: np.ndarray) -> None:
    state, redis = new_state(), Redis()
    enrich(state, redis, batch(columns, 0, 400, partitions))
    kept = {p: dict(ids) for p, ids in state.index.items() if p != 1}
    before = {p: [state._state[r].copy() for r in ids.values()] for p, ids in kept.items()}
    state.forget([1])
    assert set(state.index) == set(kept) and 1 not in state.floors
    after = {p: [state._state[r] for r in ids.values()] for p, ids in state.index.items()}
    for p in kept:
        np.testing.assert_array_equal(np.array(after[p]), np.array(before[p]))
    assert state.snapshot({1: 400}).keys == []  # nothing of the forgotten partition is written


def test_entities_not_in_memory_are_skipped_without_a_read(columns: Columns, partitions: np.ndarray) -> None:
    state = new_state()
    events = batch(columns, 0, 50, partitions)
    plan = state.plan(events)  # Redis did not answer: no load
    values, skipped = state.advance(events, plan)
    assert skipped == 50 and len(state) == 0
    assert set(values["n_all"]) == {0.0} and set(values["since"]) == {-1.0}


def test_only_changed_entities_of_owned_partitions_are_snapshotted(columns: Columns, partitions: np.ndarray) -> None:
    state, redis = new_state(), Redis()
    events = batch(columns, 0, 100, partitions)
    enrich(state, redis, events)
    snapshot = state.snapshot({0: 50})
    assert len(snapshot.keys) == len(set(events.columns["card"][events.partitions == 0]))
    assert set(snapshot.versions[:, 0]) == {50.0}
    state.written(snapshot, np.zeros(len(snapshot.keys), np.int64))
    assert state.snapshot({0: 60}).keys == []


def test_events_without_an_entity_id_keep_the_defaults_and_touch_no_state() -> None:
    state, redis = new_state(), Redis()
    events = EventBatch(
        {"card": np.array([None, "", "a", None], dtype=object), "amount": np.ones(4), "t": np.array([1, 2, 3, 4])},
        np.zeros(4, np.int32),
        np.arange(4),
        [None] * 4,
    )
    plan = state.plan(events)
    assert plan.keys == [("0", "a")]  # nothing to read for the anonymous events
    state.load(plan, [None], np.array([-1]))
    values, skipped = state.advance(events, plan)
    assert skipped == 0 and values["n_all"].tolist() == [0, 0, 0, 0] and len(state) == 1
    assert enrich(state, redis, events)["n_all"].tolist() == [0, 0, 1, 0]
