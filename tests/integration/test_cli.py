"""The `streamer` command as ops run it: bad configs stop it with one line; SIGTERM drains."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from streamer.codec import AvroCodec
from streamer.settings import Settings
from tests.conftest import ROOT, SCHEMAS
from tests.integration.conftest import SettingsFactory, committed_offsets, end_offsets, produce_payments, read_topic


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


def streamer(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )


def fails_with(config: Path) -> str:
    process = streamer("run", "--config", str(config))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("streamer: ")
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
    line = fails_with(config)
    assert "no broker answered at 127.0.0.1:1" in line and "make stack-up" in line


def test_missing_topic(make_settings: SettingsFactory, tmp_path: Path) -> None:
    config = write_config(make_settings(), tmp_path / "c.yaml", topics__input="never-created-topic")
    assert "topic 'never-created-topic' does not exist" in fails_with(config)


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
