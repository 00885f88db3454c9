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
from collections.abc import Callable
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

# Before the stream that is measured, the demo sends this many seconds of events at the same rate
# and reads them back, reported apart. On a broker started moments before, a JVM still compiling
# and the first requests of fresh topics put ~1 s on every event for the first ~8 s at 4k ev/s
# (measured, the floor's pass-through alike): the broker's start, not the worker's serving.
# Benchmarks warm up for the same reason (Triton's perf_analyzer measures stable windows).
WARM_UP_S = 10.0


@dataclass(frozen=True)
class Latencies:
    """Send → scored event read back, in ms, over one stream of events."""

    events: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, sent_at: dict[str, float], arrivals: dict[str, float]) -> Latencies:
        ms = np.array([(arrivals[event] - sent_at[event]) * 1000 for event in arrivals if event in sent_at])
        if not len(ms):
            return cls(0, float("nan"), float("nan"))
        return cls(len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))


@dataclass
class DemoReport:
    produced: int
    scored: int
    duplicates: int
    latency: Latencies
    warm_up: Latencies  # the events sent before, read back apart
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
    settings: Settings,
    config_path: Path,
    events: int,
    rate: float,
    steps: tuple[Step, ...] = (),
    warm_up_s: float = WARM_UP_S,
) -> DemoReport:
    """Start `streamer run` as a child process, stream payments, read the scored topic, SIGTERM.
    `warm_up_s` of events at `rate` go first, read back and reported apart. With `steps`, the
    worker runs on a copy of the config whose model section takes each step's keys in turn,
    after an equal share of the events, applied by SIGHUP as an operator would."""
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
        run = uuid.uuid4().hex[:8]
        sample: list[dict[str, Any]] = []
        reader = _ScoredReader(settings, worker)
        warm_up = reader.stream(f"warmup-{run}-", int(warm_up_s * rate), rate)
        if phases:
            phases[0].started = time.time()  # the first step's clock starts with the stream, not the worker

        def on_row(row: dict[str, Any], received: float, scored: int) -> None:
            if len(sample) < 3:
                sample.append(row)
            if phases:
                at = received - phases[-1].started
                phases[-1].rows.append((at, row["model_version"], row["score"], row["entity_id"]))
                if len(phases) < len(steps) and scored >= len(phases) * events / len(steps):
                    take_step()

        measured = reader.stream(f"demo-{run}-", events, rate, on_row)
        reader.close()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(60)
        shutil.rmtree(private.parent, ignore_errors=True)
    return DemoReport(
        produced=len(measured.sent_at),
        scored=len(measured.arrivals),
        duplicates=measured.duplicates + warm_up.duplicates,
        latency=Latencies.of(measured.sent_at, measured.arrivals),
        warm_up=Latencies.of(warm_up.sent_at, warm_up.arrivals),
        worker_exit=exit_code,
        samples=sample,
        phases=phases,
    )


@dataclass
class Stream:
    """One stream of payments: when each was sent, and when its scored event was read back."""

    sent_at: dict[str, float] = field(default_factory=dict)
    arrivals: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0


class _ScoredReader:
    """Reads the scored topic from its end as the demo found it: earlier runs' records are not
    this run's, and a topic kept from an older version of the scored schema would not decode."""

    def __init__(self, settings: Settings, worker: subprocess.Popen[bytes]) -> None:
        self.settings, self.worker = settings, worker
        topic = settings.topics.scored
        self.consumer = Consumer(
            {**settings.admin_config(), "group.id": f"demo-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(
            [TopicPartition(topic, tp.partition, self.consumer.get_watermark_offsets(tp)[1]) for tp in ends]
        )
        self.codec = AvroCodec(settings.schemas.scored)

    def stream(
        self, prefix: str, events: int, rate: float, on_row: Callable[[dict[str, Any], float, int], None] | None = None
    ) -> Stream:
        """Send `events` ids starting with `prefix` at `rate`, and read their scored events back
        (a minute of grace past the sending, or until the worker exits). `on_row`: each scored
        event of this stream as it arrives, with the number read back so far."""
        stream = Stream()
        producer = threading.Thread(
            target=_produce_payments, args=(self.settings, prefix, events, rate, stream.sent_at), daemon=True
        )
        producer.start()
        deadline = time.monotonic() + events / rate + 60
        while len(stream.arrivals) < events and time.monotonic() < deadline and self.worker.poll() is None:
            for message in self.consumer.consume(500, 0.005):
                if message.error():
                    continue
                received = time.time()
                value = unframed(message.value() or b"", self.settings.schemas.output_framing)
                row = self.codec.decode_one(value)
                if not row["event_id"].startswith(prefix):
                    continue
                if row["event_id"] in stream.arrivals:
                    stream.duplicates += 1
                stream.arrivals[row["event_id"]] = received
                if on_row is not None:
                    on_row(row, received, len(stream.arrivals))
        producer.join()
        return stream

    def close(self) -> None:
        self.consumer.close()


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
    latency, warm_up = report.latency, report.warm_up
    lines = [
        f"events in:        {report.produced}",
        f"events scored:    {report.scored} (duplicates: {report.duplicates})",
        f"latency p50/p99:  {latency.p50_ms:.1f} ms / {latency.p99_ms:.1f} ms (send → scored event read back)",
        *(
            [
                f"warm-up:          {warm_up.events} events before these: p50/p99 {warm_up.p50_ms:.1f} ms / "
                f"{warm_up.p99_ms:.1f} ms (connections, first fetches; on a broker just started, its warm-up)"
            ]
            if warm_up.events
            else []
        ),
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
