"""`streamer demo`: a real worker as a child process, payments streamed in at a rate, the scored
topic read back, and a report of latency and of what each canary step changed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.kafka.admin import create_topics
from streamer.registry import unframed
from streamer.settings import Settings


@dataclass
class DemoReport:
    produced: int
    scored: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    worker_exit: int
    samples: list[dict[str, Any]]
    phases: list[Phase] = field(default_factory=list)


Step = tuple[str, dict[str, Any]]  # what the phase shows, and the model keys it changes

# `streamer demo --canary`: v1 and v2 on disk; each step rewrites the worker's config, then SIGHUP.
CANARY_STEPS: tuple[Step, ...] = (
    ("canary: model.canary_share 0.1", {"canary_share": 0.1}),
    ("rollback: model.policy pinned, model.version 1 (share left at 0.1)", {"policy": "pinned", "version": 1}),
    ("promotion: model.policy latest, model.canary_share 0", {"policy": "latest", "version": None, "canary_share": 0}),
)


@dataclass
class Phase:
    """The scored events read back after one step: (seconds since the step, version, score, card)."""

    name: str
    started: float
    rows: list[tuple[float, int, float, str]] = field(default_factory=list)


def run_demo(
    settings: Settings, config_path: Path, events: int, rate: float, steps: tuple[Step, ...] = ()
) -> DemoReport:
    """Start `streamer run` as a child process, stream payments, read the scored topic, SIGTERM.
    With `steps`, the worker runs on a copy of the config whose model section takes each step's
    keys in turn, after an equal share of the events, applied by SIGHUP as an operator would."""
    topics = settings.topics
    create_topics(settings.admin_config(), settings.topic_names(), topics.partitions, topics.replication_factor)
    private = Path(tempfile.mkdtemp(prefix="streamer-demo-")) / config_path.name
    tree = yaml.safe_load(config_path.read_text())
    phases: list[Phase] = []

    def take_step() -> None:
        name, changes = steps[len(phases)]
        tree["model"] = {**tree["model"], **changes}
        private.write_text(yaml.safe_dump(tree, sort_keys=False))
        if phases:
            worker.send_signal(signal.SIGHUP)
        phases.append(Phase(name, time.time()))

    worker_config = config_path
    if steps:
        worker_config = private
        take_step()
    worker = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--config", str(worker_config)], env=os.environ)
    try:
        _wait_for_member(settings, worker)
        prefix = f"demo-{uuid.uuid4().hex[:8]}-"
        arrivals: dict[str, float] = {}
        sample: list[dict[str, Any]] = []
        duplicates = 0
        reader = Consumer(
            {**settings.admin_config(), "group.id": f"demo-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
        # From the current end: earlier runs' records are not this run's, and a topic kept from an
        # older version of the scored schema would not even decode.
        partitions = reader.list_topics(topics.scored, timeout=10).topics[topics.scored].partitions
        ends = [TopicPartition(topics.scored, p) for p in sorted(partitions)]
        reader.assign([TopicPartition(tp.topic, tp.partition, reader.get_watermark_offsets(tp)[1]) for tp in ends])
        scored_codec = AvroCodec(settings.schemas.scored)
        sent_at: dict[str, float] = {}
        producer_thread = threading.Thread(
            target=_produce_payments, args=(settings, prefix, events, rate, sent_at), daemon=True
        )
        if phases:
            phases[0].started = time.time()  # the first step's clock starts with the stream, not the worker
        producer_thread.start()
        deadline = time.monotonic() + events / rate + 60
        while len(arrivals) < events and time.monotonic() < deadline and worker.poll() is None:
            for message in reader.consume(500, 0.005):
                if message.error():
                    continue
                received = time.time()
                row = scored_codec.decode_one(unframed(message.value() or b"", settings.schemas.output_framing))
                if not row["event_id"].startswith(prefix):
                    continue
                if row["event_id"] in arrivals:
                    duplicates += 1
                arrivals[row["event_id"]] = received
                if len(sample) < 3:
                    sample.append(row)
                if phases:
                    at = received - phases[-1].started
                    phases[-1].rows.append((at, row["model_version"], row["score"], row["entity_id"]))
            if len(phases) < len(steps) and len(arrivals) >= len(phases) * events / len(steps):
                take_step()
        producer_thread.join()
        reader.close()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(60)
        shutil.rmtree(private.parent, ignore_errors=True)
    latencies = np.array([(arrivals[k] - sent_at[k]) * 1000 for k in arrivals if k in sent_at])
    return DemoReport(
        produced=len(sent_at),
        scored=len(arrivals),
        duplicates=duplicates,
        p50_ms=float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        p99_ms=float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
        worker_exit=exit_code,
        samples=sample,
        phases=phases,
    )


def _produce_payments(settings: Settings, prefix: str, events: int, rate: float, sent_at: dict[str, float]) -> None:
    codec = AvroCodec(settings.schemas.input)
    producer = Producer({**settings.admin_config(), "linger.ms": 2})
    columns, _ = synth_payments(events, np.random.default_rng(), id_prefix=prefix)
    started = time.monotonic()
    for i, row in enumerate(rows_of(columns)):
        ahead = started + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        now = time.time()
        row["event_time"] = int(now * 1000)
        sent_at[row["event_id"]] = now
        producer.produce(settings.topics.input, codec.encode_one(row), row["card_id"].encode())
        producer.poll(0)
    producer.flush(30)


def _wait_for_member(settings: Settings, worker: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    """Produce only once the worker holds partitions, so start-up does not count as latency."""
    admin = AdminClient(settings.admin_config())
    group = str(settings.consumer_config()["group.id"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode} before joining")
        try:
            description = admin.describe_consumer_groups([group])[group].result()
            if any(m.assignment.topic_partitions for m in description.members):
                return
        except KafkaException:  # the coordinator is still loading the group: ask again
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not join group {group} within {timeout_s:.0f} s")


def format_report(report: DemoReport) -> str:
    lines = [
        f"events in:        {report.produced}",
        f"events scored:    {report.scored} (duplicates: {report.duplicates})",
        f"latency p50/p99:  {report.p50_ms:.1f} ms / {report.p99_ms:.1f} ms (send → scored event read back)",
        f"worker exit code: {report.worker_exit}",
        "a few scored events:",
        *(json.dumps(s) for s in report.samples),
    ]
    for phase in report.phases:
        versions_of: dict[str, set[int]] = {}
        for _, version, _, card in phase.rows:
            versions_of.setdefault(card, set()).add(version)
        both = sum(len(v) > 1 for v in versions_of.values())
        lines.append(f"{phase.name}: {len(phase.rows)} events, {both} cards scored by both versions")
        for version in sorted({r[1] for r in phase.rows}):
            rows = [r for r in phase.rows if r[1] == version]
            lines.append(
                f"  v{version}: {len(rows) / len(phase.rows):6.1%} of events, {len({r[3] for r in rows})} cards, "
                f"median score {np.median([r[2] for r in rows]):.4f}, scored from +{rows[0][0]:.1f} s "
                f"to +{rows[-1][0]:.1f} s after the step"
            )
    return "\n".join(lines)
