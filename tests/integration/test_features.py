"""The feature stage against a real redis-server started on a free port."""

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis

from streamer.errors import Retriable
from streamer.feature_settings import FeatureStoreSettings
from streamer.feature_spec import FeatureSpec
from streamer.features import FeatureStore, replay_aggregates
from streamer.metrics import Metrics
from streamer.records import Columns, EventBatch
from streamer.snapshot_writes import WRITE_CHUNK
from tests.integration.conftest import RedisServer

SPEC = FeatureSpec.from_dict(
    {
        "features": [
            {"name": "n_1h", "kind": "entity", "entity": "card", "aggregate": "count", "half_life_s": 3600},
            {"name": "n_all", "kind": "entity", "entity": "card", "aggregate": "count"},
            {"name": "sum_amt", "kind": "entity", "entity": "card", "aggregate": "sum", "of": "amount"},
            {
                "name": "mean_amt",
                "kind": "entity",
                "entity": "card",
                "aggregate": "mean",
                "of": "amount",
                "half_life_s": 600,
                "default": -1,
            },
            {"name": "max_amt", "kind": "entity", "entity": "card", "aggregate": "max", "of": "amount", "default": -1},
            {"name": "since", "kind": "entity", "entity": "card", "aggregate": "since_last", "default": -1},
            {"name": "risk", "kind": "entity", "entity": "card", "key": "profile:card:{id}", "default": 0.5},
        ]
    }
)
AGGREGATES = tuple(f for f in SPEC.entity_features() if f.aggregate)


def store(server: RedisServer, prefix: str, spec: FeatureSpec = SPEC, **settings: float) -> FeatureStore:
    config = FeatureStoreSettings(url=server.url, key_prefix=prefix, **settings)  # type: ignore[arg-type]
    return FeatureStore(config, spec, Metrics.create(), "t", "card")


def stream(n: int, seed: int = 0, cards: int = 7) -> EventBatch:
    """Events of few cards over two partitions keyed by card, each partition in offset order."""
    rng = np.random.default_rng(seed)
    card = rng.integers(0, cards, n)
    partitions = (card % 2).astype(np.int32)
    offsets = np.zeros(n, np.int64)
    for p in (0, 1):
        offsets[partitions == p] = np.arange((partitions == p).sum()) + 100
    columns = {
        "card": np.array([f"c{i}" for i in card], dtype=object),
        "amount": np.round(rng.exponential(40, n), 2),
        "t": 1_700_000_000_000 + np.cumsum(rng.integers(1, 120_000, n)).astype(np.int64),
    }
    return EventBatch(columns, partitions, offsets, [None] * n)


def next_offsets(events: EventBatch) -> dict[int, int]:
    return {int(p): int(events.offsets[events.partitions == p].max()) + 1 for p in np.unique(events.partitions)}


def checkpoint(features: FeatureStore, events: EventBatch, commits: bool = True) -> None:
    """What the worker's checkpoint does after `events`: snapshot, then (unless it fails) commit."""
    features.persist(next_offsets(events))
    if commits:
        features.committed()


def assert_identical(got: Columns, expected: Columns) -> None:
    assert got.keys() == expected.keys()
    for name, column in expected.items():
        assert np.max(np.abs(got[name] - column), initial=0) == 0, name
        np.testing.assert_array_equal(got[name], column, err_msg=name)


def test_values_equal_one_by_one_and_the_offline_twin(redis_server: RedisServer) -> None:
    events = stream(300)
    batched = store(redis_server, "batch").enrich(events)
    one_by_one = store(redis_server, "single")
    singles = [one_by_one.enrich(events.take(np.array([i]))) for i in range(len(events))]
    assert not batched.degraded.any()
    for name, column in batched.columns.items():
        np.testing.assert_array_equal(column, np.concatenate([s.columns[name] for s in singles]), err_msg=name)
    twin = replay_aggregates(AGGREGATES, events.columns, "t")
    for name, column in twin.items():
        np.testing.assert_array_equal(batched.columns[name], column, err_msg=name)  # same doubles
    first = {card: i for i, card in reversed(list(enumerate(events.columns["card"])))}
    for card, i in first.items():  # a card's first event sees the defaults
        assert batched.columns["n_all"][i] == 0 and batched.columns["since"][i] == -1, card


def test_a_retried_round_trip_gives_the_values_of_one_without_faults(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the round trip but its reply was lost: the retry must not change any value."""
    events = stream(400, seed=1)
    clean = store(redis_server, "clean")
    clean.enrich(events.take(slice(0, 200)))
    checkpoint(clean, events.take(slice(0, 200)))
    expected = store(redis_server, "clean").enrich(events.take(slice(200, 400)))  # a restart, fault-free

    faulty = store(redis_server, "clean")
    real_pipeline = faulty.client.pipeline
    lost: list[int] = []

    def losing_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        execute: Callable[..., Any] = pipe.execute

        def execute_then_lose(*a: Any, **k: Any) -> Any:
            replies = execute(*a, **k)
            if not lost:
                lost.append(1)
                raise redis.TimeoutError("Timeout reading from socket")
            return replies

        pipe.execute = execute_then_lose
        return pipe

    monkeypatch.setattr(faulty.client, "pipeline", losing_pipeline)
    got = faulty.enrich(events.take(slice(200, 400)))
    assert lost and not got.degraded.any()
    assert faulty.metrics.registry.get_sample_value("streamer_retries_total", {"operation": "redis"}) == 1
    assert_identical(got.columns, expected.columns)


def committed_half(server: RedisServer, prefix: str, seed: int) -> tuple[EventBatch, Columns]:
    """600 events: the first 300 enriched and checkpointed by one store, then the values that
    store gives the last 300, which a restarted store must give too."""
    events = stream(600, seed=seed)
    first = store(server, prefix)
    first.enrich(events.take(slice(0, 300)))
    checkpoint(first, events.take(slice(0, 300)))
    return events.take(slice(300, 600)), first.enrich(events.take(slice(300, 600))).columns


def test_a_restart_reads_the_state_at_the_committed_offset(redis_server: RedisServer) -> None:
    rest, expected = committed_half(redis_server, "restart", seed=2)
    restarted = store(redis_server, "restart")  # a new process, nothing in memory
    assert_identical(restarted.enrich(rest).columns, expected)


def test_a_redis_that_lost_the_read_script_gets_it_again_and_the_same_values(redis_server: RedisServer) -> None:
    rest, expected = committed_half(redis_server, "noscript", seed=5)
    restarted = store(redis_server, "noscript")
    restarted.start()
    redis.Redis(port=redis_server.port).script_flush()  # as a Redis restart between two batches does
    got = restarted.enrich(rest)
    assert not got.degraded.any()
    assert_identical(got.columns, expected)


def test_an_aborted_transaction_replays_with_the_same_values(redis_server: RedisServer) -> None:
    events = stream(600, seed=3)
    features = store(redis_server, "abort")
    features.enrich(events.take(slice(0, 200)))
    checkpoint(features, events.take(slice(0, 200)))
    aborted = events.take(slice(200, 450))
    expected = features.enrich(aborted)
    checkpoint(features, aborted, commits=False)  # snapshot written, then the transaction aborts
    features.forget([0, 1])  # the worker's rewind
    assert_identical(features.enrich(aborted).columns, expected.columns)


def test_a_crash_between_the_snapshot_and_the_commit_replays_with_the_same_values(
    redis_server: RedisServer,
) -> None:
    events = stream(900, seed=4)
    first = store(redis_server, "crash")
    for part in (slice(0, 300), slice(300, 500)):
        first.enrich(events.take(part))
        checkpoint(first, events.take(part))
    replayed = events.take(slice(500, 900))
    expected = first.enrich(replayed)
    checkpoint(first, replayed, commits=False)  # SIGKILL here: offsets stay at 500
    assert_identical(store(redis_server, "crash").enrich(replayed).columns, expected.columns)


def distinct_cards(events: EventBatch, partition: int | None = None) -> int:
    cards = events.columns["card"]
    return len(set(cards if partition is None else cards[events.partitions == partition]))


def test_a_snapshot_written_in_steps_while_events_go_on_is_the_state_at_its_cut(redis_server: RedisServer) -> None:
    events = stream(1200, seed=7, cards=3000)
    cut, after = events.take(slice(0, 600)), events.take(slice(600, 1200))
    first = store(redis_server, "steps")
    first.enrich(cut)
    write = first.begin_persist(next_offsets(cut))
    assert write is not None and write.snapshot is not None
    assert len(write.snapshot.keys) == distinct_cards(cut) > 2 * WRITE_CHUNK
    assert not write.step()  # a chunk, then the loop scores a batch
    expected = first.enrich(after)
    while not write.step():
        pass
    first.committed()
    assert_identical(store(redis_server, "steps").enrich(after).columns, expected.columns)
    again = first.begin_persist(next_offsets(after))  # what changed during the write: all of it
    assert again is not None and again.snapshot is not None and len(again.snapshot.keys) == distinct_cards(after)


def test_a_snapshot_write_abandoned_by_a_rebalance_hands_its_entities_to_the_next(redis_server: RedisServer) -> None:
    events = stream(600, seed=8, cards=3000)
    features = store(redis_server, "abandoned")
    features.enrich(events)
    write = features.begin_persist(next_offsets(events))
    assert write is not None and not write.step()
    features.forget([1])  # partition 1 lost mid-write
    with pytest.raises(Retriable):
        write.step()
    kept = features.begin_persist({0: next_offsets(events)[0]})
    assert kept is not None and kept.snapshot is not None
    assert len(kept.snapshot.keys) == distinct_cards(events, partition=0)


def at_generation(features: FeatureStore, generation: int, ttl_s: float = 60) -> FeatureStore:
    """`features` with its wall clock `generation` snapshot generations from now (hashes of
    past generations have already expired)."""
    now = int(time.time() // ttl_s)
    features.layout.wall = lambda: (now + generation + 0.5) * ttl_s
    return features


def test_state_follows_an_entity_across_generations_whatever_the_members_clocks(
    redis_server: RedisServer,
) -> None:
    events = stream(1500, seed=6)
    parts = [events.take(slice(a, a + 300)) for a in range(0, 1500, 300)]
    first = at_generation(store(redis_server, "gens", ttl_s=60), 1)
    first.enrich(parts[0])
    checkpoint(first, parts[0])
    expected = first.enrich(parts[1])
    checkpoint(first, parts[1], commits=False)  # SIGKILL: an uncommitted version stays in generation 1

    # The next owner's clock is in generation 2: it reads 1's copy at the committed offset.
    second = at_generation(store(redis_server, "gens", ttl_s=60), 2)
    assert_identical(second.enrich(parts[1]).columns, expected.columns)
    checkpoint(second, parts[1])  # generation 2 now holds the newest copy of each entity met
    second.enrich(parts[2])
    checkpoint(second, parts[2])
    expected = second.enrich(parts[3])  # then second dies before its next checkpoint

    # A member whose clock lags (generation 1) reads 2's copies, not 1's older ones, and writes
    # where the entities are, so a member in generation 2 sees its writes.
    lagging = at_generation(store(redis_server, "gens", ttl_s=60), 1)
    assert_identical(lagging.enrich(parts[3]).columns, expected.columns)
    checkpoint(lagging, parts[3])
    expected = lagging.enrich(parts[4])
    third = at_generation(store(redis_server, "gens", ttl_s=60), 2)
    assert_identical(third.enrich(parts[4]).columns, expected.columns)


def test_snapshots_are_hash_fields_per_partition_bucket_and_expiry_generation(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port)
    events = stream(100, seed=5)
    features = store(redis_server, "keys", ttl_s=60)
    features.enrich(events)
    assert client.keys("keys:*") == []  # nothing is written before a checkpoint
    checkpoint(features, events)
    keys = sorted(k.decode() for k in client.keys("keys:agg:*"))
    generation = int(time.time() // 60)
    assert {k.rsplit(":", 1)[1] for k in keys} == {str(generation)}
    tags = {k.split(":")[-2] for k in keys}  # the Redis Cluster hash tag: {partition.bucket}
    assert all(t.startswith("{") and t.endswith("}") and t[1:-1].split(".")[0].isdigit() for t in tags)
    fields = {(field.decode(), k.split(":")[-2][1:-1].split(".")[0]) for k in keys for field in client.hkeys(k)}
    cards = {(c, str(p)) for c, p in zip(events.columns["card"], events.partitions.tolist(), strict=True)}
    assert fields == cards  # one field per (entity, partition)
    ends_ms = (generation + 2) * 60_000  # the end of the next generation
    assert all(0 < client.pttl(k) <= ends_ms - time.time() * 1000 + 1000 for k in keys)


def test_stored_values_are_read_and_missing_ones_default(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port)
    client.hset("profile:card:c1", "risk", "0.9")
    client.hset("profile:card:c2", "other", "1")
    events = stream(50, seed=2)
    result = store(redis_server, "stored").enrich(events)
    cards = events.columns["card"]
    assert set(result.columns["risk"][cards == "c1"]) == {np.float32(0.9)}
    assert set(result.columns["risk"][cards != "c1"]) == {np.float32(0.5)}


def test_outage_keeps_known_entities_exact_and_commits_nothing_until_redis_is_back(
    redis_server: RedisServer,
) -> None:
    aggregates_only = FeatureSpec(tuple(f for f in SPEC.features if f.name != "risk"))
    features = store(redis_server, "outage", aggregates_only, max_stall_ms=200, timeout_ms=50, breaker_open_s=0.5)
    events = stream(240, seed=6, cards=6)
    known = np.isin(events.columns["card"], ["c0", "c1", "c2", "c3"])
    met, later = events.take(np.flatnonzero(known[:120])), events.take(np.flatnonzero(known)[known[:120].sum() :])
    new = events.take(np.flatnonzero(~known[:120]))
    expected = replay_aggregates(AGGREGATES, EventBatch.concat([met, later]).columns, "t")
    assert not features.enrich(met.take(slice(0, 20))).degraded.any()
    redis_server.stop()
    started = time.monotonic()
    during = features.enrich(met.take(slice(20, None)))  # in memory: no Redis call needed
    assert time.monotonic() - started < 0.05
    assert not during.degraded.any()
    for name, column in expected.items():
        np.testing.assert_array_equal(during.columns[name], column[20 : len(met)], err_msg=name)
    with pytest.raises(Retriable):  # the checkpoint cannot write the snapshot: no offsets commit
        features.persist(next_offsets(met))
    unknown = features.enrich(new.take(slice(0, 10)))  # must be read, cannot: defaults, not applied
    assert unknown.degraded.all() and features.breaker.is_open
    assert set(unknown.columns["n_all"]) == {0.0} and set(unknown.columns["mean_amt"]) == {-1.0}
    metrics = features.metrics.registry
    assert metrics.get_sample_value("streamer_feature_updates_skipped_total") == 10
    assert metrics.get_sample_value("streamer_features_degraded_events_total") == 10
    redis_server.start()
    time.sleep(0.6)
    features.persist(next_offsets(met))  # back: the snapshot goes out at the next checkpoint
    features.committed()
    assert not features.breaker.is_open
    restarted = store(redis_server, "outage", aggregates_only)  # from the offsets that checkpoint committed
    assert_identical(restarted.enrich(later).columns, {k: v[len(met) :] for k, v in expected.items()})


@pytest.mark.parametrize("size", [1, 1024])
def test_one_round_trip_per_batch_and_none_once_entities_are_in_memory(redis_server: RedisServer, size: int) -> None:
    client = redis.Redis(port=redis_server.port)
    features = store(redis_server, "trips")
    features.start()  # loads the read script
    executed = []
    real_pipeline = features.client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute
        pipe.execute = lambda *a, **k: executed.append(len(pipe.command_stack)) or real_execute(*a, **k)
        return pipe

    features.client.pipeline = counting_pipeline  # type: ignore[method-assign]
    before = client.info("commandstats")
    events = stream(size, seed=4)
    features.enrich(events)
    after = client.info("commandstats")

    def calls(command: str) -> int:
        return int(after.get(f"cmdstat_{command}", {"calls": 0})["calls"]) - int(
            before.get(f"cmdstat_{command}", {"calls": 0})["calls"]
        )

    # A cold start: one round trip; one script call reads the cards' snapshots (an HMGET per
    # snapshot hash, in each of three generations), and one HMGET per distinct card its stored values.
    cards = len(set(events.columns["card"]))
    pairs = zip(events.columns["card"].tolist(), events.partitions.tolist(), strict=True)
    hashes = {features.layout.address(str(c), p)[0] for c, p in pairs}
    assert executed == [1 + cards]
    assert calls("evalsha") == 1 and calls("hmget") == cards + 3 * len(hashes)
    assert calls("script|exists") == 0  # called by its digest, with no SCRIPT EXISTS round trip first
    features.enrich(stream(size, seed=4))  # the same cards again: only the stored values are read
    assert executed == [1 + cards, len(set(stream(size, seed=4).columns["card"]))]
    aggregates_only = store(redis_server, "trips", FeatureSpec(tuple(f for f in SPEC.features if f.name != "risk")))
    aggregates_only.client.pipeline = counting_pipeline  # type: ignore[method-assign]
    aggregates_only.enrich(events)
    executed.clear()
    aggregates_only.enrich(events)
    assert executed == []  # every card in memory and nothing stored: no round trip at all


def test_events_without_an_entity_get_defaults_and_touch_no_state(redis_server: RedisServer) -> None:
    """A null or empty id keys nothing: no shared `{None}` or `{}` state, defaults served, and the
    other events read what they would read without them; the offline twin agrees."""
    events = stream(120, seed=5)
    cards = events.columns["card"].copy()
    cards[[3, 40, 41]] = None
    cards[[7, 90]] = ""
    anonymous = np.isin(np.arange(120), [3, 7, 40, 41, 90])
    with_gaps = EventBatch({**events.columns, "card": cards}, events.partitions, events.offsets, events.keys)
    client = redis.Redis(port=redis_server.port)
    client.hset("profile:card:None", "risk", "0.9")  # what a `None` id would have read

    anon = store(redis_server, "anon")
    served = anon.enrich(with_gaps)
    alone = store(redis_server, "named").enrich(with_gaps.take(~anonymous))

    assert not served.degraded.any()
    for name, column in served.columns.items():
        default = next(f.default for f in SPEC.entity_features() if f.name == name)
        assert set(column[anonymous].tolist()) == {default}, name
        np.testing.assert_array_equal(column[~anonymous], alone.columns[name], err_msg=name)
    checkpoint(anon, with_gaps)
    written = {field.decode() for k in client.keys("anon:agg:*") for field in client.hkeys(k)}
    assert written == set(cards[~anonymous])
    twin = replay_aggregates(AGGREGATES, with_gaps.columns, "t")
    for name, column in twin.items():
        np.testing.assert_array_equal(served.columns[name], column, err_msg=name)
