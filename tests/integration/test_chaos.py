"""Chaos against the real broker, counting input ids against output ids in every test.

Outputs are read with isolation.level=read_committed: in exactly-once mode every id must appear
exactly once; in at-least-once mode at least once. STREAMER_CHAOS_KILLS sets the SIGKILL count
per mode (`make chaos` raises it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from streamer.codec import AvroCodec
from streamer.settings import Settings
from streamer.worker import Worker
from tests.conftest import ROOT, SCHEMAS
from tests.integration.conftest import PrivateStack, SettingsFactory, SteadyProducer, offline_scores, read_topic
from tests.integration.test_cli import write_config

KILLS = int(os.environ.get("STREAMER_CHAOS_KILLS", "5"))
MODES = ["at_least_once", "exactly_once"]
# The broker's minimum session: a killed member is noticed within seconds, not the default 45.
FAST_SESSIONS = {"consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}}


def spawn(config: Path, worker_id: str, static: bool = False) -> subprocess.Popen[bytes]:
    """`static`: KIP-345 static membership, as a StatefulSet pod would use: a restarted member
    takes its partitions back at once instead of waiting for the session of its dead self."""
    env = {**os.environ, "STREAMER_WORKER_ID": worker_id}
    if static:
        env["STREAMER_KAFKA__CONSUMER__GROUP_INSTANCE_ID"] = worker_id
    log = (config.parent / f"{worker_id}.log").open("ab")  # kept for a failing test's report
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def scored(settings: Settings, expected: int, timeout_s: float = 120) -> list[tuple[str, float]]:
    """(event id, score) of every committed copy on the scored topic."""
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    committed = {**settings.admin_config(), "isolation.level": "read_committed"}
    messages = read_topic(committed, settings.topics.scored, expected, timeout_s=timeout_s)
    return [(row["event_id"], row["score"]) for row in (codec.decode_one(m.value) for m in messages)]


def check(copies: list[tuple[str, float]], producer: SteadyProducer, mode: str) -> None:
    """Every event scored (once, exactly once), every copy with the same score, equal to the
    offline twin's on the input as it landed: each card's events in its partition's order (a
    broker restart can make the load producer's retries reorder a partition)."""
    sent = producer.ids
    ids = Counter(event_id for event_id, _ in copies)
    assert set(ids) == set(sent), f"{len(set(sent) - set(ids))} events lost"
    if mode == "exactly_once":
        duplicated = {k: n for k, n in ids.items() if n > 1}
        assert not duplicated, f"{len(duplicated)} events scored more than once, e.g. {list(duplicated)[:3]}"
    scores: dict[str, set[float]] = {}
    for event_id, score in copies:
        scores.setdefault(event_id, set()).add(score)
    differ = {k: sorted(v) for k, v in scores.items() if len(v) > 1}
    assert not differ, f"{len(differ)} events have copies with different scores, e.g. {list(differ.items())[:3]}"
    settings = producer.settings
    landed = read_topic(settings.admin_config(), settings.topics.input, len(sent))
    codec = AvroCodec(settings.schemas.input)
    rows = [codec.decode_one(m.value) for m in sorted(landed, key=lambda m: m.partition)]  # stable: offset order
    offline = offline_scores(settings, codec.columns_of(rows))
    gap = max(abs(score - offline[event_id]) for event_id, score in copies)
    assert gap <= 1e-6, f"streamed scores differ from the offline twin's by up to {gap}"


def wait_until_serving(config: Path, worker_id: str, timeout_s: float = 60) -> None:
    log = config.parent / f"{worker_id}.log"
    deadline = time.monotonic() + timeout_s
    while '"event": "assign"' not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{worker_id} never got partitions; see {log}"
        time.sleep(0.2)


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0, f"worker exited with {worker.returncode}; its log is under the test's tmp_path"


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_at_random_points(make_settings: SettingsFactory, tmp_path: Path, mode: str) -> None:
    settings = make_settings(delivery={"mode": mode, "commit_interval_ms": 100}, kafka=FAST_SESSIONS)
    config = write_config(settings, tmp_path / "c.yaml")
    # Events keep coming until after the last kill, so the last member has work to finish.
    producer = SteadyProducer(settings, total=300 * (6 * KILLS + 8), rate=300, prefix=f"k{mode[0]}-")
    producer.start()
    rng = random.Random(42)
    for _ in range(KILLS):  # the same member id each time, as a restarted pod would have
        worker = spawn(config, "chaos-member", static=True)
        time.sleep(rng.uniform(2.5, 6.0))  # sometimes during start-up, mostly mid-stream
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    worker = spawn(config, "chaos-member", static=True)
    wait_until_serving(config, "chaos-member")
    producer.join()
    copies = scored(settings, len(producer.ids))
    stop(worker)
    check(copies, producer, mode)


@pytest.mark.parametrize("mode", MODES)
def test_scale_one_three_one_under_load(make_settings: SettingsFactory, tmp_path: Path, mode: str) -> None:
    settings = make_settings(
        delivery={"mode": mode, "commit_interval_ms": 100}, topics={"partitions": 6}, kafka=FAST_SESSIONS
    )
    config = write_config(settings, tmp_path / "c.yaml")
    producer = SteadyProducer(settings, total=500 * 24, rate=500, prefix=f"s{mode[0]}-")
    first = spawn(config, "member-1")
    producer.start()
    time.sleep(6)
    extra = [spawn(config, "member-2"), spawn(config, "member-3")]
    for member in ("member-2", "member-3"):
        wait_until_serving(config, member)
    time.sleep(3)
    for worker in extra:
        stop(worker)
    producer.join()
    copies = scored(settings, len(producer.ids))
    stop(first)
    check(copies, producer, mode)


@pytest.mark.parametrize("mode", MODES)
def test_broker_restart_mid_stream(
    make_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory, mode: str
) -> None:
    stack = PrivateStack(tmp_path_factory.mktemp("stack"))
    stack.up()
    try:
        settings = make_settings(
            kafka={"common": {"bootstrap.servers": stack.brokers}, "consumer": {"group.id": f"restart-{mode}"}},
            delivery={"mode": mode, "commit_interval_ms": 100},
        )
        producer = SteadyProducer(settings, total=300 * 20, rate=300, prefix=f"r{mode[0]}-")
        worker = Worker(settings)

        def restart_broker() -> None:
            time.sleep(5)
            stack.down()
            time.sleep(3)
            stack.up()

        def stop_when_all_scored() -> None:
            producer.join()
            scored(settings, len(producer.ids))
            worker.stop()

        helpers = [threading.Thread(target=restart_broker), threading.Thread(target=stop_when_all_scored)]
        producer.start()
        for helper in helpers:
            helper.start()
        worker.run(timeout_s=180)  # the same worker throughout: it must recover by itself
        for helper in helpers:
            helper.join()
        check(scored(settings, len(producer.ids)), producer, mode)
    finally:
        stack.down()
