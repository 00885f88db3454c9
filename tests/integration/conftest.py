"""Fixtures against the real stack: `make test` starts it; STREAMER_TEST_BROKERS points elsewhere.

Every test gets fresh uuid-named topics and group, so tests never see each other's data.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.features import replay_aggregates
from streamer.kafka.admin import create_topics
from streamer.model import load_model
from streamer.preprocess import raw_tensors
from streamer.records import Columns
from streamer.settings import Settings
from tests.conftest import SCHEMAS, free_port

BROKERS = os.environ.get("STREAMER_TEST_BROKERS", "127.0.0.1:9092")
STACK_SCRIPT = str(Path(__file__).resolve().parents[2] / "docker" / "local-stack.sh")


class PrivateStack:
    """A broker of the test's own (docker/local-stack.sh on free ports), to restart or reconfigure
    without disturbing the shared one."""

    def __init__(self, folder: Path, **extra_env: str) -> None:
        self.env = {
            **os.environ,
            "STREAMER_STACK_DIR": str(folder),
            "KAFKA_PORT": str(free_port()),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            "REDIS_PORT": str(free_port()),
            "KAFKA_HEAP": "512m",
            **extra_env,
        }
        self.brokers = f"127.0.0.1:{self.env['KAFKA_PORT']}"

    def up(self) -> None:
        subprocess.run([STACK_SCRIPT, "up"], env=self.env, check=True, capture_output=True, timeout=180)

    def down(self) -> None:
        subprocess.run([STACK_SCRIPT, "down"], env=self.env, check=True, capture_output=True, timeout=120)


def wait_for_redis(client: redis.Redis, timeout_s: float = 10) -> None:
    """Until a just-started redis-server answers PING; its last error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RedisServer:
    """A real redis-server on a free loopback port, in its own folder; stop/start for outages."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_redis(redis.Redis(port=self.port, password=self.password))

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis for one test (outages, exact key counts)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis the worker tests use: STREAMER_TEST_REDIS, or one started for the session."""
    if "STREAMER_TEST_REDIS" in os.environ:
        yield os.environ["STREAMER_TEST_REDIS"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def brokers() -> str:
    try:
        AdminClient({"bootstrap.servers": BROKERS}).list_topics(timeout=10)
    except KafkaException:
        pytest.fail(f"no Kafka broker at {BROKERS}: run `make stack-up` or set STREAMER_TEST_BROKERS")
    return BROKERS


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(brokers: str, demo_model: Path, shared_redis_url: str) -> SettingsFactory:
    """Settings with fresh topics (created) and group; keyword sections override the defaults."""

    def factory(**sections: dict[str, Any]) -> Settings:
        run = uuid.uuid4().hex[:10]
        tree: dict[str, Any] = {
            "worker_id": f"test-{run}",
            "kafka": {"common": {"bootstrap.servers": brokers}, "consumer": {"group.id": f"g-{run}"}},
            "topics": {
                "input": f"in-{run}",
                "scored": f"scored-{run}",
                "alerts": f"alerts-{run}",
                "dlq": f"dlq-{run}",
                "partitions": 4,
            },
            "schemas": {
                "input": str(SCHEMAS / "payment.avsc"),
                "scored": str(SCHEMAS / "scored_payment.avsc"),
                "dlq": str(SCHEMAS / "dlq_record.avsc"),
                "drift": str(SCHEMAS / "drift_report.avsc"),
            },
            "model": {"path": str(demo_model), "alert_threshold": 0.1},
            "event": {"entity_field": "card_id"},
            "delivery": {"commit_interval_ms": 200},
            "features": {"url": shared_redis_url, "key_prefix": f"t-{run}"},
            "metrics": {"port": 0},
        }
        for name, values in sections.items():
            if name == "kafka":  # librdkafka dicts merge one level deeper
                values = {part: {**tree["kafka"].get(part, {}), **props} for part, props in values.items()}
            tree[name] = {**tree.get(name, {}), **values}
        settings = Settings.model_validate(tree)
        topics = settings.topics
        create_topics(settings.admin_config(), settings.topic_names(), topics.partitions, topics.replication_factor)
        return settings

    return factory


@dataclass
class Sent:
    columns: Columns
    values: list[bytes]


def produce_payments(settings: Settings, n: int, seed: int = 0) -> Sent:
    """Plain producer, keyed by card so each card's events stay in order on one partition."""
    columns, _ = synth_payments(n, np.random.default_rng(seed), id_prefix=f"s{seed}-")
    codec = AvroCodec(settings.schemas.input)
    values = codec.encode(rows_of(columns))
    produce_values(settings, values, [c.encode() for c in columns["card_id"]])
    return Sent(columns, values)


def produce_values(
    settings: Settings, values: list[bytes], keys: list[bytes] | None = None, topic: str | None = None
) -> None:
    """To `topic`, by default the input topic."""
    producer = Producer({**settings.admin_config(), "linger.ms": 5})
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic or settings.topics.input, value, keys[i] if keys else None)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


@dataclass
class Read:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int


def read_topic(connection: str | Mapping[str, Any], topic: str, expected: int, timeout_s: float = 60) -> list[Read]:
    """Everything on `topic`, waiting until `expected` messages arrived (then a moment for extras).
    `connection`: a bootstrap address, or librdkafka properties (TLS, SASL)."""
    common = {"bootstrap.servers": connection} if isinstance(connection, str) else dict(connection)
    consumer = Consumer({**common, "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    found: list[Read] = []
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            for m in batch:
                if m.error() is None:
                    found.append(Read(m.key(), m.value(), dict(m.headers() or []), m.partition()))
            if len(found) >= expected:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() >= quiet_until:
                    break
    finally:
        consumer.close()
    return found


def offline_scores(settings: Settings, columns: Columns) -> dict[str, float]:
    """Per event id, the model's score with the offline twin's aggregates over `columns`, in order."""
    model = load_model(settings.model, AvroCodec(settings.schemas.input).field_types)
    columns = columns | replay_aggregates(model.spec.entity_features(), columns, settings.event.time_field)
    scores = model.signature(**raw_tensors(columns, model.inputs))["score"].numpy()
    return dict(zip(columns[settings.event.id_field], scores.astype(np.float64).tolist(), strict=True))


def committed_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer({**settings.consumer_config()})
    try:
        parts = [TopicPartition(settings.topics.input, p) for p in range(settings.topics.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer({**settings.admin_config(), "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(settings.topics.input, p), timeout=10)[1]
            for p in range(settings.topics.partitions)
        }
    finally:
        consumer.close()


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on the worker's health port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(port: int) -> Scraped:
    """Every sample on /metrics, keyed by name and sorted labels."""
    _, text = get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: Scraped, name: str) -> float:
    """The sum of a metric's samples over all label values."""
    return sum(v for (n, _), v in scraped.items() if n == name)


class SteadyProducer(threading.Thread):
    """Payments at a fixed rate, keyed by card, event time = send time."""

    def __init__(self, settings: Settings, total: int, rate: float, prefix: str, cards: int | None = None) -> None:
        super().__init__(daemon=True)
        self.settings, self.total, self.rate = settings, total, rate
        columns, _ = synth_payments(total, np.random.default_rng(), id_prefix=prefix, cards=cards)
        self.ids = list(columns["event_id"])
        self.rows = rows_of(columns)

    def run(self) -> None:
        codec = AvroCodec(self.settings.schemas.input)
        # Idempotent: a broker restart must neither duplicate nor reorder the input, or the same
        # event id would stand for two records with different histories.
        producer = Producer({**self.settings.admin_config(), "linger.ms": 5, "enable.idempotence": True})
        started = time.monotonic()
        for i, row in enumerate(self.rows):
            time.sleep(max(started + i / self.rate - time.monotonic(), 0))
            row["event_time"] = int(time.time() * 1000)
            while True:
                try:
                    producer.produce(self.settings.topics.input, codec.encode_one(row), row["card_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0
