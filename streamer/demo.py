"""The demo domain: synthetic card payments whose fraud label depends on their features, a model
trained on them, and `streamer demo`, which streams them through a real worker and reports."""

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

import keras
import numpy as np
import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamer.codec import AvroCodec
from streamer.features import replay_aggregates
from streamer.kafka.admin import create_topics
from streamer.model import export_package
from streamer.preprocess import FeatureSpec, Preprocessor, analyze, batches_of, training_dataset
from streamer.records import Columns
from streamer.registry import unframed
from streamer.settings import Settings

COUNTRIES = np.array(["US", "GB", "DE", "FR", "NL", "ES", "IT", "BR", "IN", "NG", "PL", "SE"])
CURRENCY_OF = {"US": "USD", "GB": "GBP", "BR": "BRL", "IN": "INR", "NG": "NGN", "PL": "PLN", "SE": "SEK"}
RISKY_MCCS = np.array(["7995", "6051", "4829", "5967"])  # gambling, quasi-cash, transfers, direct marketing
MCCS = np.concatenate([np.array(["5411", "5812", "5541", "5999", "4111", "5732", "5311", "7011"]), RISKY_MCCS])
CHANNELS = np.array(["pos", "ecom", "atm", "moto"])
ENTRY_MODES = np.array(["chip", "contactless", "swipe", "manual", "token"])
DEVICES = np.array(["terminal", "mobile", "desktop", "tablet", "unknown"])
LOAD_CARDS, LOAD_SKEW = 50_000, 0.5  # load/loadgen.py's card population: Zipf popularity, exponent SKEW


def synth_payments(
    n: int, rng: np.random.Generator, id_prefix: str = "", start_ms: int | None = None, cards: int | None = None
) -> tuple[Columns, np.ndarray]:
    """Columns matching schemas/payment.avsc, and a fraud label drawn from a known logit; `cards`
    distinct card ids, one per 20 events by default."""
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    card_country = rng.choice(COUNTRIES, n, p=_zipf(len(COUNTRIES)))
    abroad = rng.random(n) < 0.12
    country = np.where(abroad, rng.choice(COUNTRIES, n), card_country)
    channel = rng.choice(CHANNELS, n, p=[0.55, 0.35, 0.07, 0.03])
    card_present = np.isin(channel, ["pos", "atm"])
    entry_mode = np.where(
        card_present, rng.choice(ENTRY_MODES[:3], n, p=[0.4, 0.5, 0.1]), rng.choice(ENTRY_MODES[3:], n)
    )
    device = np.where(card_present, "terminal", rng.choice(DEVICES[1:], n, p=[0.6, 0.3, 0.05, 0.05]))
    mcc = rng.choice(MCCS, n, p=_zipf(len(MCCS)))
    amount = np.round(np.exp(rng.normal(3.4, 1.2, n)), 2)
    tenure = rng.integers(0, 3650, n).astype(np.int32)
    event_time = start_ms + np.sort(rng.integers(0, 86_400_000, n)).astype(np.int64)
    hour = (event_time // 3_600_000) % 24
    logit = (
        -5.0
        + 0.6 * np.log1p(amount) / 2
        + 1.4 * (amount > 400)
        + 1.3 * ((channel == "ecom") & (entry_mode == "manual"))
        + 1.4 * (country != card_country)
        + 1.6 * np.isin(mcc, RISKY_MCCS)
        + 0.9 * (hour < 5)
        - 0.8 * (tenure > 365)
    )
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    card_numbers = rng.integers(0, cards or max(n // 20, 1), n)
    columns: Columns = {
        "event_id": np.array([f"{id_prefix}{i:09d}" for i in range(n)], dtype=object),
        "card_id": np.array([f"card-{c:07d}" for c in card_numbers], dtype=object),
        "merchant_id": np.array([f"m-{m:05d}" for m in rng.integers(0, 5000, n)], dtype=object),
        "amount": amount,
        "currency": np.array([CURRENCY_OF.get(c, "EUR") for c in country], dtype=object),
        "country": country.astype(object),
        "card_country": card_country.astype(object),
        "mcc": mcc.astype(object),
        "channel": channel.astype(object),
        "entry_mode": entry_mode.astype(object),
        "device_type": device.astype(object),
        "device_id": np.array([None if d == "terminal" else f"dev-{i % 9973}" for i, d in enumerate(device)]),
        "card_present": card_present,
        "customer_tenure_days": tenure,
        "event_time": event_time,
    }
    return columns, labels


def load_payments(
    n: int, rng: np.random.Generator, card_weights: np.ndarray, send_times_ms: np.ndarray, drift: bool, id_prefix: str
) -> Columns:
    """What load/loadgen.py sends: demo payments whose cards come from a population with the given
    popularity, stamped with their send times. `drift` injects what the drift tap must flag: amounts
    triple and 10% of events come from a country never seen in training ("ZZ")."""
    columns, _ = synth_payments(n, rng, id_prefix=id_prefix)
    cards = rng.choice(len(card_weights), n, p=card_weights)
    columns["card_id"] = np.array([f"card-{c:07d}" for c in cards], dtype=object)
    columns["event_time"] = np.asarray(send_times_ms).astype(np.int64)
    if drift:
        columns["amount"] = np.round(columns["amount"] * 3, 2)
        columns["country"] = np.where(rng.random(n) < 0.1, "ZZ", columns["country"]).astype(object)
    return columns


def _zipf(k: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, k + 1)
    return weights / weights.sum()


def rows_of(columns: Columns) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*(columns[n].tolist() for n in names), strict=True)]


def train_demo_model(
    out: Path, spec_path: Path, schema_path: Path, version: int = 1, events: int = 60_000, seed: int | None = None
) -> Path:
    """The public API end to end: analyze, train through `tf.data`, export `<out>/<version>`.

    Versions differ visibly, so a canary or a shadow shows a difference and not training noise
    (one seed for all gave a median score gap of 3.5e-4): each draws its own payments (seed
    6 + version), and an even version is fitted on a subset that leaves out three in four
    legitimate payments, so it scores several times higher. The analysis (vocabularies, drift
    baseline) always sees the whole draw, so no version looks drifted on the same traffic."""
    seed = 6 + version if seed is None else seed
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    spec = FeatureSpec.load(spec_path)
    raw_columns = spec.raw_columns(AvroCodec(schema_path).field_types)
    columns, labels = synth_payments(events, rng)
    columns |= replay_aggregates(spec.entity_features(), columns, "event_time")
    train = {name: column[: events * 9 // 10] for name, column in columns.items()}
    holdout = {name: column[events * 9 // 10 :] for name, column in columns.items()}
    analysis = analyze(spec, batches_of(train, 8192))
    fit_labels = labels[: len(train["amount"])]
    fit = (fit_labels == 1) | (rng.random(len(fit_labels)) < (1.0 if version % 2 else 0.25))
    with tempfile.TemporaryDirectory() as vocabulary_dir:
        preprocessor = Preprocessor(spec, analysis, Path(vocabulary_dir))
        fit_columns = {name: column[fit] for name, column in train.items()}
        dataset = training_dataset(preprocessor, raw_columns, fit_columns, fit_labels[fit])
        width = sum(preprocessor.width(f) for f in spec.features)
        network = keras.Sequential(
            [
                keras.Input((width,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        network.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["auc"])
        network.fit(dataset, epochs=4, verbose=0, shuffle=False)  # the dataset shuffles
        return export_package(out, version, preprocessor, network, raw_columns, holdout=holdout)


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
    create_topics(settings.admin_config(), topics.names(), topics.partitions, topics.replication_factor)
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
