"""`streamer demo` (what `make demo` runs) against the real stack."""

from pathlib import Path

from confluent_kafka import Producer

from streamer.demo import run_demo
from streamer.kafka.admin import create_topics
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

    report = run_demo(settings, write_config(settings, tmp_path / "demo.yaml"), events=600, rate=300)

    assert (report.produced, report.scored, report.duplicates, report.worker_exit) == (600, 600, 0, 0)
    assert report.p50_ms <= report.p99_ms
    assert all(sample["event_id"].startswith("demo-") for sample in report.samples)
