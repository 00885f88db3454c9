"""`streamer demo` (what `make demo` runs) against the real stack."""

import shutil
from pathlib import Path

from confluent_kafka import Producer

from streamer.demo.run import CANARY_STEPS, format_report, run_demo
from streamer.kafka.admin import create_topics
from streamer.lifecycle import entity_buckets, routed
from tests.conftest import wrap_package
from tests.integration.conftest import SettingsFactory
from tests.integration.test_cli import write_config


def test_demo_scores_every_event_once_and_skips_what_the_topic_held_before(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    topics = settings.topics
    create_topics(settings.admin_config(), topics.names(), topics.partitions, topics.replication_factor)
    producer = Producer(settings.admin_config())
    for partition in range(topics.partitions):  # what an older scored schema left: not decodable now
        producer.produce(topics.scored, b"\x02\xff written by another schema", partition=partition)
    producer.flush(10)

    report = run_demo(settings, write_config(settings, tmp_path / "demo.yaml"), events=600, rate=300, warm_up_s=1)

    assert (report.produced, report.scored, report.duplicates, report.worker_exit) == (600, 600, 0, 0)
    assert report.latency.p50_ms <= report.latency.p99_ms
    assert report.warm_up.events == 300  # sent first, read back, and not among the 600
    assert all(sample["event_id"].startswith("demo-") for sample in report.samples)


def test_the_canary_demo_shows_a_canary_a_rollback_and_a_promotion_on_the_scored_topic(
    make_settings: SettingsFactory, demo_model: Path, tmp_path: Path
) -> None:
    import numpy as np
    import tensorflow as tf

    models = tmp_path / "fraud"
    shutil.copytree(demo_model, models)
    wrap_package(models / "1", models / "2", lambda inputs, scores: scores * tf.constant(0.5, scores.dtype))
    settings = make_settings(model={"path": str(models)}, batching={"allowed_batch_sizes": [64, 256, 1024]})

    report = run_demo(settings, write_config(settings, tmp_path / "demo.yaml"), 3600, 1200, CANARY_STEPS, 1)

    assert (report.produced, report.scored, report.duplicates, report.worker_exit) == (3600, 3600, 0, 0)
    canary, rollback, promotion = report.phases
    cards = np.array([r[3] for r in canary.rows], dtype=object)
    assert np.array_equal(np.array([r[1] for r in canary.rows]) == 2, routed(entity_buckets(cards), 0.1))
    assert {r[1] for r in rollback.rows[-200:]} == {1} and {r[1] for r in promotion.rows[-200:]} == {2}
    assert "rollback: model.policy pinned, model.version 1" in format_report(report)
