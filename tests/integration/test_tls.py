"""TLS to Kafka and to Redis (with AUTH), with a CA and certificates the test creates.

A second broker, with an SSL listener, is started by docker/local-stack.sh on free ports; Redis
listens with TLS only. The worker then scores events through both.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamer.codec import AvroCodec
from streamer.worker import Worker
from tests.conftest import SCHEMAS
from tests.integration.conftest import (
    PrivateStack,
    SettingsFactory,
    free_port,
    produce_payments,
    read_topic,
    wait_for_redis,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=streamer-test-ca",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    # Kafka's PEM keystore: the PKCS#8 private key, then the certificate chain.
    (folder / "keystore.pem").write_text((folder / "server.key").read_text() + (folder / "server.pem").read_text())
    return folder


@pytest.fixture(scope="module")
def tls_broker(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ssl_port = free_port()
    stack = PrivateStack(
        tmp_path_factory.mktemp("stack"),
        KAFKA_SSL_PORT=str(ssl_port),
        KAFKA_SSL_KEYSTORE=str(certs / "keystore.pem"),
        KAFKA_SSL_CA=str(certs / "ca.pem"),
    )
    stack.up()
    try:
        yield f"127.0.0.1:{ssl_port}"
    finally:
        stack.down()


@pytest.fixture
def tls_redis(certs: Path, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "s3cret",
            "--tls-cert-file",
            str(certs / "server.pem"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_redis(redis.Redis(port=port, ssl=True, ssl_ca_certs=str(certs / "ca.pem"), password="s3cret"))
    yield port
    process.kill()
    process.wait()


def test_worker_scores_over_tls_to_kafka_and_redis(
    make_settings: SettingsFactory, tls_broker: str, tls_redis: int, certs: Path
) -> None:
    settings = make_settings(
        kafka={
            "common": {
                "bootstrap.servers": tls_broker,
                "security.protocol": "SSL",
                "ssl.ca.location": str(certs / "ca.pem"),
            },
            "consumer": {"group.id": "tls-group"},
        },
        features={
            "url": f"rediss://127.0.0.1:{tls_redis}/0",
            "password": "s3cret",
            "tls": {"ca_file": str(certs / "ca.pem")},
        },
    )
    produce_payments(settings, 500, seed=11)
    worker = Worker(settings)
    stats = worker.run(max_events=500, timeout_s=120)
    assert stats.scored == 500
    assert worker.metrics.registry.get_sample_value("streamer_features_degraded_events_total") == 0
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    scored = [codec.decode_one(m.value) for m in read_topic(settings.kafka.common, settings.topics.scored, 500)]
    assert len(scored) == 500 and not any(r["features_degraded"] for r in scored)
    keys = redis.Redis(port=tls_redis, ssl=True, ssl_ca_certs=str(certs / "ca.pem"), password="s3cret").keys("*:agg:*")
    assert keys  # aggregates were written over TLS
