"""The `streamer` command as ops run it: bad configs stop it with one line; SIGTERM drains."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from streamer.codec import AvroCodec
from streamer.settings import Settings
from tests.conftest import ROOT, SCHEMAS
from tests.integration.conftest import (
    RedisServer,
    SettingsFactory,
    committed_offsets,
    end_offsets,
    produce_payments,
    read_topic,
)


def write_config(settings: Settings, path: Path, **changes: object) -> Path:
    tree = settings.model_dump(mode="json")
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def streamer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )


def fails_with(config: Path, env: dict[str, str] | None = None) -> str:
    """The one line a refused start ends with; every line before it is a JSON log line."""
    process = streamer("run", "--config", str(config), env=env)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    *logs, last = stderr.strip().splitlines()
    assert last.startswith("streamer: ")
    assert all(line.startswith("{") for line in logs), logs
    return last


def test_unknown_key(make_settings: SettingsFactory, tmp_path: Path) -> None:
    config = write_config(make_settings(), tmp_path / "c.yaml", batching__max_wait=5)
    assert "batching.max_wait: unknown key" in fails_with(config)


def test_missing_model(make_settings: SettingsFactory, tmp_path: Path) -> None:
    config = write_config(make_settings(), tmp_path / "c.yaml", model__path=str(tmp_path / "none"))
    line = fails_with(config)
    assert "no such folder" in line and "export-demo" in line


def test_unreachable_broker(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    config = write_config(settings, tmp_path / "c.yaml", kafka__common={"bootstrap.servers": "127.0.0.1:1"})
    process = streamer("run", "--config", str(config))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    lines = stderr.strip().splitlines()
    assert "no broker answered at 127.0.0.1:1" in lines[-1] and "make stack-up" in lines[-1]
    kafka_lines = [line for line in lines if '"logger": "streamer.kafka' in line]
    assert len(kafka_lines) <= 4, kafka_lines  # one per kind of failure, not one per retry (was ~390)


SECRETS = ["[sekrit", "12345678", "#sekrit", "yes", '"x', "a: b"]


def test_secrets_from_the_environment_are_never_printed(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """Each secret also sits in a malformed Redis URL, so the start is refused with one line."""
    config = write_config(make_settings(), tmp_path / "c.yaml")
    for secret in SECRETS:
        env = {
            "STREAMER_FEATURES__PASSWORD": secret,
            "STREAMER_KAFKA__COMMON__SASL_PASSWORD": secret,
            "STREAMER_FEATURES__URL": f"notaurl://:{secret}@host/0",
        }
        process = streamer("run", "--config", str(config), env=env)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 2, stderr
        assert secret not in (stdout or "") + stderr
        assert stderr.strip().splitlines() == [stderr.strip()]
        assert "features.url: not a valid Redis URL" in stderr


def test_a_yaml_looking_password_from_the_environment_reaches_redis_verbatim(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    secret = "#sekrit: [0777"
    server = RedisServer(tmp_path, password=secret)
    server.start()
    try:
        settings = make_settings(topics={"partitions": 1})
        config = write_config(settings, tmp_path / "c.yaml", features__url=server.url)
        produce_payments(settings, 200, seed=4)
        process = streamer(
            "run", "--config", str(config), "--max-events", "200", env={"STREAMER_FEATURES__PASSWORD": secret}
        )
        _, stderr = process.communicate(timeout=120)
    finally:
        server.stop()
    assert process.returncode == 0, stderr
    assert secret not in stderr and "sekrit" not in stderr
    assert "breaker_open" not in stderr  # AUTH with the password as given: features were read, not defaulted
    brokers = str(settings.admin_config()["bootstrap.servers"])
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    scored = [codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.scored, 200)]
    assert len(scored) == 200 and not any(r["features_degraded"] for r in scored)


def test_malformed_redis_url_and_nan_threshold_are_one_line(make_settings: SettingsFactory, tmp_path: Path) -> None:
    config = write_config(make_settings(), tmp_path / "c.yaml")
    for url in ("notaurl://x", "redis://user:pw@[bad/0"):
        assert "features.url: not a valid Redis URL" in fails_with(config, {"STREAMER_FEATURES__URL": url})
    line = fails_with(config, {"STREAMER_MODEL__ALERT_THRESHOLD": "nan"})
    assert "model.alert_threshold: Input should be a finite number" in line


def test_missing_topic(make_settings: SettingsFactory, tmp_path: Path) -> None:
    config = write_config(make_settings(), tmp_path / "c.yaml", topics__input="never-created-topic")
    assert "topic 'never-created-topic' does not exist" in fails_with(config)


def test_metrics_port_taken(make_settings: SettingsFactory, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(make_settings(), tmp_path / "c.yaml", metrics__port=port)
        process = streamer("run", "--config", str(config))
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert stderr.strip().splitlines() == [
        f"streamer: metrics: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "free the port or fix metrics.host / metrics.port (port 0 picks a free one)"
    ]


def test_sigterm_drains_commits_and_exits_zero(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    config = write_config(settings, tmp_path / "c.yaml")
    worker = streamer("run", "--config", str(config))
    try:
        sent = produce_payments(settings, 3000, seed=2)
        brokers = str(settings.admin_config()["bootstrap.servers"])
        scored = read_topic(brokers, settings.topics.scored, 3000, timeout_s=120)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    assert "stopped: RunStats(consumed=3000, scored=3000" in stderr
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    assert sorted(codec.decode_one(m.value)["event_id"] for m in scored) == sorted(sent.columns["event_id"])
    assert committed_offsets(settings) == end_offsets(settings)


def test_demo_command_reports_every_event(make_settings: SettingsFactory, tmp_path: Path) -> None:
    config = write_config(make_settings(), tmp_path / "c.yaml")
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "streamer", "demo", "--config", str(config), "--events", "2000", "--rate", "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "events scored:    2000 (duplicates: 0)" in process.stdout
    assert time.monotonic() - started < 180


def test_a_mistyped_event_field_stops_run_before_it_joins_the_group(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    config = write_config(settings, tmp_path / "c.yaml", event__time_field="amount")
    line = fails_with(config)
    assert line.startswith("streamer: event.time_field: field 'amount' of ") and "not a non-null long" in line
    assert committed_offsets(settings) == {p: -1001 for p in range(settings.topics.partitions)}  # never joined
