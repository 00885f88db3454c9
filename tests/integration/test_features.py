"""The feature stage against a real redis-server started on a free port."""

import time

import numpy as np
import pytest
import redis

from streamer import features as features_module
from streamer.features import FeatureStore, replay_aggregates
from streamer.metrics import Metrics
from streamer.preprocess import FeatureSpec
from streamer.records import EventBatch
from streamer.settings import FeatureStoreSettings
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
            {"name": "m_n", "kind": "entity", "entity": "merchant", "aggregate": "count"},
            {"name": "risk", "kind": "entity", "entity": "card", "key": "profile:card:{id}", "default": 0.5},
        ]
    }
)


def store(server: RedisServer, prefix: str, **settings: float) -> FeatureStore:
    config = FeatureStoreSettings(url=server.url, key_prefix=prefix, **settings)  # type: ignore[arg-type]
    return FeatureStore(config, SPEC, Metrics.create(), "t")


def stream(n: int, seed: int = 0) -> EventBatch:
    """Events of few cards over two partitions, each partition in offset order."""
    rng = np.random.default_rng(seed)
    partitions = rng.integers(0, 2, n).astype(np.int32)
    offsets = np.zeros(n, np.int64)
    for p in (0, 1):
        offsets[partitions == p] = np.arange((partitions == p).sum()) + 100
    columns = {
        "card": rng.choice(np.array([f"c{i}" for i in range(7)], dtype=object), n),
        "merchant": rng.choice(np.array(["m1", "m2"], dtype=object), n),
        "amount": np.round(rng.exponential(40, n), 2),
        "t": 1_700_000_000_000 + np.cumsum(rng.integers(1, 120_000, n)).astype(np.int64),
    }
    return EventBatch(columns, partitions, offsets, [None] * n)


def test_in_batch_values_equal_one_by_one_and_the_offline_twin(redis_server: RedisServer) -> None:
    events = stream(300)
    batched = store(redis_server, "batch").enrich(events)
    one_by_one = store(redis_server, "single")
    singles = [one_by_one.enrich(events.take(np.array([i]))) for i in range(len(events))]
    assert not batched.degraded
    for name, column in batched.columns.items():
        np.testing.assert_array_equal(column, np.concatenate([s.columns[name] for s in singles]), err_msg=name)
    twin = replay_aggregates(SPEC.entity_features(), events.columns, "t")
    for name, column in twin.items():
        np.testing.assert_array_equal(batched.columns[name], column, err_msg=name)  # same doubles
    first = {card: i for i, card in reversed(list(enumerate(events.columns["card"])))}
    for card, i in first.items():  # a card's first event sees the defaults
        assert batched.columns["n_all"][i] == 0 and batched.columns["since"][i] == -1, card


def test_a_batch_split_across_scripts_reads_what_one_script_reads(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large batches go to Redis as several pipelined scripts; an entity's events still apply in
    batch order across them."""
    events = stream(300, seed=3)
    whole = store(redis_server, "whole").enrich(events)
    monkeypatch.setattr(features_module, "SCRIPT_MAX_EVENTS", 7)
    split = store(redis_server, "split").enrich(events)
    assert not split.degraded
    for name, column in whole.columns.items():
        np.testing.assert_array_equal(split.columns[name], column, err_msg=name)


def test_replay_does_not_count_twice(redis_server: RedisServer) -> None:
    events = stream(200, seed=1)
    features = store(redis_server, "replay")
    features.enrich(events.take(slice(0, 150)))
    client = redis.Redis(port=redis_server.port)
    keys = sorted(client.keys("replay:agg:*"))
    before = {k: client.hgetall(k) for k in keys}
    features.enrich(events.take(slice(0, 150)))  # crash before commit: the same batch again
    assert {k: client.hgetall(k) for k in keys} == before
    features.enrich(events.take(slice(100, 200)))  # overlapping replay: 50 old, 50 new events
    counts = {k: float(client.hget(k, "n_all:c")) for k in client.keys("replay:agg:card:*")}
    assert sum(counts.values()) == 200  # each event counted once
    assert float(client.hget(b"replay:agg:card:{c0}", b"n_all:c")) == (events.columns["card"] == "c0").sum()


def test_stored_values_are_read_and_missing_ones_default(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port)
    client.hset("profile:card:c1", "risk", "0.9")
    client.hset("profile:card:c2", "other", "1")
    events = stream(50, seed=2)
    result = store(redis_server, "stored").enrich(events, update=False)
    cards = events.columns["card"]
    assert set(result.columns["risk"][cards == "c1"]) == {np.float32(0.9)}
    assert set(result.columns["risk"][cards != "c1"]) == {np.float32(0.5)}
    assert client.keys("stored:agg:*") == []  # update=False writes nothing


def test_outage_serves_defaults_within_the_stall_bound_then_recovers(redis_server: RedisServer) -> None:
    features = store(redis_server, "outage", max_stall_ms=200, timeout_ms=50, breaker_open_s=0.5)
    events = stream(64, seed=3)
    assert not features.enrich(events.take(slice(0, 32))).degraded
    redis_server.stop()
    started = time.monotonic()
    down = features.enrich(events.take(slice(32, 48)))
    assert time.monotonic() - started < 0.5  # retries stay inside max_stall_ms (+ one timeout)
    assert down.degraded and features.breaker.is_open
    assert set(down.columns["n_all"]) == {0.0} and set(down.columns["mean_amt"]) == {-1.0}
    started = time.monotonic()
    assert features.enrich(events.take(slice(48, 56))).degraded  # breaker open: Redis not even tried
    assert time.monotonic() - started < 0.05
    redis_server.start()
    time.sleep(0.6)
    recovered = features.enrich(events.take(slice(56, 64)))
    assert not recovered.degraded and not features.breaker.is_open
    assert features.metrics.registry.get_sample_value("streamer_features_degraded_events_total") == 24


@pytest.mark.parametrize("size", [1, 1024])
def test_one_pipeline_per_batch(redis_server: RedisServer, size: int) -> None:
    client = redis.Redis(port=redis_server.port)
    features = store(redis_server, "trips")
    features.enrich(stream(8, seed=9))  # loads the script
    executed = []
    real_pipeline = features.client.pipeline

    def counting_pipeline(*args: object, **kwargs: object) -> object:
        pipe = real_pipeline(*args, **kwargs)  # type: ignore[arg-type]
        real_execute = pipe.execute
        pipe.execute = lambda *a, **k: executed.append(len(pipe.command_stack)) or real_execute(*a, **k)
        return pipe

    features.client.pipeline = counting_pipeline  # type: ignore[method-assign]
    before = client.info("commandstats")
    events = stream(size, seed=4)
    features.enrich(events)
    after = client.info("commandstats")

    def calls(command: str) -> int:
        return int(after[f"cmdstat_{command}"]["calls"]) - int(before.get(f"cmdstat_{command}", {"calls": 0})["calls"])

    # One round trip: two script calls (card and merchant aggregates) and one HMGET per distinct card.
    cards = len(set(events.columns["card"]))
    assert executed == [2 + cards]
    assert calls("evalsha") == 2
    assert calls("hmget") == cards


def test_events_without_an_entity_get_defaults_and_touch_no_state(redis_server: RedisServer) -> None:
    """A null or empty id keys nothing: no shared `{None}` or `{}` aggregate, defaults served,
    and the other events read what they would read without them; the offline twin agrees."""
    events = stream(120, seed=5)
    cards = events.columns["card"].copy()
    cards[[3, 40, 41]] = None
    cards[[7, 90]] = ""
    anonymous = np.isin(np.arange(120), [3, 7, 40, 41, 90])
    with_gaps = EventBatch({**events.columns, "card": cards}, events.partitions, events.offsets, events.keys)
    client = redis.Redis(port=redis_server.port)
    client.hset("profile:card:None", "risk", "0.9")  # what a `None` id would have read

    served = store(redis_server, "anon").enrich(with_gaps)
    alone = store(redis_server, "named").enrich(with_gaps.take(~anonymous))

    assert not served.degraded
    for name, column in served.columns.items():
        default = next(f.default for f in SPEC.entity_features() if f.name == name)
        if name != "m_n":  # the merchant is known: its own aggregate counts these events
            assert set(column[anonymous].tolist()) == {default}, name
            np.testing.assert_array_equal(column[~anonymous], alone.columns[name], err_msg=name)
    card_keys = {k.decode() for k in client.keys("anon:agg:card:*")}
    assert card_keys == {f"anon:agg:card:{{{c}}}" for c in set(cards[~anonymous])}
    twin = replay_aggregates(SPEC.entity_features(), with_gaps.columns, "t")
    for name, column in twin.items():
        np.testing.assert_array_equal(served.columns[name], column, err_msg=name)
