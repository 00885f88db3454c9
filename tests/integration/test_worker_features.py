"""Entity features through the whole worker: replay after a crash, and a 30-second Redis outage."""

import threading
import time

import numpy as np
import pytest
from confluent_kafka import Producer

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.worker import Worker
from tests.conftest import SCHEMAS
from tests.integration.conftest import (
    RedisServer,
    SettingsFactory,
    committed_offsets,
    end_offsets,
    offline_scores,
    produce_payments,
    read_topic,
)


class Crash(BaseException):
    """Stands for SIGKILL: nothing in the worker handles it."""


def test_a_crash_between_the_snapshot_and_the_commit_changes_no_score(make_settings: SettingsFactory) -> None:
    """The state snapshot is written, then the process dies before the offsets commit: the
    replayed events get exactly the scores of their first pass, which are the offline ones."""
    settings = make_settings(delivery={"commit_interval_ms": 1}, batching={"max_batch_size": 256})
    total = 3000
    sent = produce_payments(settings, total, seed=6)
    worker = Worker(settings)
    commit = worker.source.commit
    committed: dict[int, int] = {}

    def commit_then_crash(offsets: dict[int, int]) -> None:
        # The first checkpoint past half of the events: its snapshot is written, its offsets never
        # commit. Counted in events, not checkpoints (a fast machine scored all 3,000 in four), and
        # over every partition committed so far: a commit names only the partitions that moved.
        if sum(max(o, 0) for o in (committed | offsets).values()) > total // 2:
            raise Crash
        commit(offsets)
        committed.update(offsets)

    worker.source.commit = commit_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        worker.run(max_events=total, timeout_s=120)
    remaining = total - sum(max(o, 0) for o in committed_offsets(settings).values())
    assert 0 < remaining < total
    Worker(settings).run(max_events=remaining, timeout_s=120)

    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    brokers = str(settings.admin_config()["bootstrap.servers"])
    copies: dict[str, set[float]] = {}
    messages = read_topic(brokers, settings.topics.scored, total)
    for row in (codec.decode_one(m.value) for m in messages):
        copies.setdefault(row["event_id"], set()).add(row["score"])
        assert not row["features_degraded"]
    assert len(messages) > total  # some events were scored twice ...
    assert set(copies) == set(sent.columns["event_id"])
    assert all(len(scores) == 1 for scores in copies.values())  # ... each time with the same score
    offline = offline_scores(settings, sent.columns)
    assert max(abs(scores.pop() - offline[event_id]) for event_id, scores in copies.items()) <= 1e-6


def test_redis_outage_of_30_seconds_loses_nothing_and_recovers(
    make_settings: SettingsFactory, redis_server: RedisServer
) -> None:
    settings = make_settings(
        features={"url": redis_server.url, "breaker_open_s": 1, "max_stall_ms": 200, "timeout_ms": 50}
    )
    codec = AvroCodec(settings.schemas.input)
    rate, seconds = 250, 40
    total = rate * seconds
    columns, _ = synth_payments(total, np.random.default_rng(8), id_prefix="o-")
    rows = rows_of(columns)
    outage: dict[str, float] = {}

    def produce() -> None:
        producer = Producer({**settings.admin_config(), "linger.ms": 5})
        started = time.monotonic()
        for i, row in enumerate(rows):
            time.sleep(max(started + i / rate - time.monotonic(), 0))
            row["event_time"] = int(time.time() * 1000)
            producer.produce(settings.topics.input, codec.encode_one(row), row["card_id"].encode())
            producer.poll(0)
        producer.flush(30)

    def break_redis() -> None:
        time.sleep(5)
        outage["down"] = time.time() * 1000
        redis_server.stop()
        time.sleep(30)
        redis_server.start()
        outage["up"] = time.time() * 1000

    threads = [threading.Thread(target=produce), threading.Thread(target=break_redis)]
    for thread in threads:
        thread.start()
    worker = Worker(settings)
    stats = worker.run(max_events=total, timeout_s=120)
    for thread in threads:
        thread.join()

    assert stats.scored == total
    scored_codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    brokers = str(settings.admin_config()["bootstrap.servers"])
    scored = [scored_codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.scored, total)]
    assert sorted(r["event_id"] for r in scored) == sorted(columns["event_id"])  # zero lost
    during = [r for r in scored if outage["down"] + 500 < r["scored_at"] < outage["up"]]
    after = [r for r in scored if r["scored_at"] > outage["up"] + 2000]
    before = [r for r in scored if r["scored_at"] < outage["down"]]
    # Cards met before the outage are in memory: exact values, no Redis needed. Cards met for the
    # first time during it cannot be read: defaults, flagged.
    assert during and any(r["features_degraded"] for r in during) and not all(r["features_degraded"] for r in during)
    assert before and not any(r["features_degraded"] for r in before)
    assert after and not any(r["features_degraded"] for r in after)  # recovered by itself
    # Never stalled: even while Redis was down, each event was scored within a second.
    assert max(r["scored_at"] - r["event_time"] for r in during) < 1000
    assert committed_offsets(settings) == end_offsets(settings)  # checkpoints resumed once Redis was back
    degraded = worker.metrics.registry.get_sample_value("streamer_features_degraded_events_total")
    assert degraded == sum(r["features_degraded"] for r in scored)
