"""Entity features through the whole worker: replay after a crash, and a 30-second Redis outage."""

import threading
import time

import numpy as np
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.codec import AvroCodec
from streamer.demo import rows_of, synth_payments
from streamer.settings import Settings
from streamer.worker import Worker
from tests.conftest import SCHEMAS
from tests.integration.conftest import RedisServer, SettingsFactory, produce_payments, read_topic


def aggregates(server: RedisServer, settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis(port=server.port)
    return {key: client.hgetall(key) for key in client.keys(f"{settings.features.key_prefix}:agg:*")}


def rewind(settings: Settings) -> None:
    """What a crash before the commit leaves behind: the group's offsets at the start."""
    consumer = Consumer(settings.consumer_config())
    partitions = [TopicPartition(settings.topics.input, p, 0) for p in range(settings.topics.partitions)]
    consumer.commit(offsets=partitions, asynchronous=False)
    consumer.close()


def test_reprocessing_after_a_crash_leaves_aggregates_unchanged(
    make_settings: SettingsFactory, redis_server: RedisServer
) -> None:
    settings = make_settings(features={"url": redis_server.url})
    produce_payments(settings, 2000, seed=6)
    Worker(settings).run(max_events=2000, timeout_s=120)
    before = aggregates(redis_server, settings)
    assert sum(float(state[b"card_count_1h:c"]) > 0 for state in before.values()) == len(before) > 50

    rewind(settings)
    stats = Worker(settings).run(max_events=2000, timeout_s=120)

    assert stats.scored == 2000  # every event scored again (at least once) ...
    assert aggregates(redis_server, settings) == before  # ... and counted once


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
    assert during and all(r["features_degraded"] for r in during)
    assert before and not any(r["features_degraded"] for r in before)
    assert after and not any(r["features_degraded"] for r in after)  # recovered by itself
    # Never stalled: even while Redis was down, each event was scored within a second.
    assert max(r["scored_at"] - r["event_time"] for r in during) < 1000
    degraded = worker.metrics.registry.get_sample_value("streamer_features_degraded_events_total")
    assert degraded == sum(r["features_degraded"] for r in scored)
