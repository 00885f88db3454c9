"""The load generator: realistic payments at a target rate, end-to-end latency read back.

    .venv/bin/python load/loadgen.py --rate 8000 --duration 60 [--entities 50000 --skew 0.5]
        [--drift-at 30] [--spawn-worker] [--config configs/local.yaml] [--out load/results/loadgen]

- Events come from the demo payments generator; `card_id` is redrawn from `--entities` cards
  with Zipf skew `--skew` (0 = uniform), and `--drift-at` seconds in, amounts triple and 10% of
  events come from a country never seen in training (the drift tap should alert).
- Each event's `event_time` is stamped when it is sent; a reader on the scored topic
  (read_committed) takes arrival minus event time as the end-to-end latency.
- `--spawn-worker` runs `streamer run` as its own process on fresh topics (as in production:
  no GIL shared with the generator), times it from spawn to `/readyz` 200 (the ready time), and
  samples its RSS every few seconds: `make soak` is this, for ten minutes at half the rate
  `make bench` sustained.
- It shows a progress bar, and writes `<out>.json` (summary and per-second timeline) and
  `<out>.png` (throughput, latency percentiles and RSS over time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from confluent_kafka import Consumer, Producer
from tqdm import tqdm

from streamer.codec import AvroCodec
from streamer.demo.payments import LOAD_CARDS, LOAD_SKEW, load_payments
from streamer.kafka.admin import create_topics, delete_topics
from streamer.records import RawBatch, now_ms
from streamer.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1000  # events drawn at a time
RSS_EVERY_S = 5.0
ENTITIES, SKEW = LOAD_CARDS, LOAD_SKEW  # the default card population: `make soak` and `make bench` (d) use it


@dataclass
class Timeline:
    """Per-second counts and latencies, indexed by seconds since the start."""

    sent: list[int] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    latencies: list[list[float]] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)

    def slot(self, series: list[Any], second: int, empty: Any) -> None:
        while len(series) <= second:
            series.append(empty() if callable(empty) else empty)


class Generator:
    def __init__(self, settings: Settings, entities: int, skew: float, drift_at_s: float | None, seed: int = 0):
        self.settings = settings
        self.codec = AvroCodec(settings.schemas.input)
        self.rng = np.random.default_rng(seed)
        self.weights = 1.0 / np.arange(1, entities + 1) ** skew
        self.weights /= self.weights.sum()
        self.drift_at_s = drift_at_s
        self.drawn = 0

    def chunk(self, elapsed_s: float, send_times_ms: np.ndarray) -> tuple[list[bytes], list[bytes]]:
        """The next len(send_times_ms) events, encoded in one columnar pass, each stamped with the
        time it is due to be sent: (values, keys)."""
        n = len(send_times_ms)
        drift = self.drift_at_s is not None and elapsed_s >= self.drift_at_s
        columns = load_payments(n, self.rng, self.weights, send_times_ms, drift, id_prefix=f"g{self.drawn}-")
        self.drawn += n
        return self.codec.encode_columns(columns, n), [card.encode() for card in columns["card_id"]]


def produce(settings: Settings, generator: Generator, rate: float, duration_s: float, timeline: Timeline) -> None:
    """Open-loop sends: event i is due at start + i / rate and stamped with that time, so a
    sender running late adds to the measured latency instead of hiding it (no coordinated
    omission). Events are encoded a chunk ahead, keeping the per-event work to a `produce`."""
    producer = Producer({**settings.admin_config(), "linger.ms": 2})
    started, started_ms = time.monotonic(), now_ms()
    total = int(rate * duration_s)
    values: list[bytes] = []
    keys: list[bytes] = []
    with tqdm(total=total, unit="ev", desc="sent", file=sys.stderr, mininterval=1.0) as bar:
        for i in range(total):
            if not values:
                due = started_ms + (i + np.arange(min(CHUNK, total - i))) * 1000 / rate
                values, keys = generator.chunk(time.monotonic() - started, due)
                values.reverse()
                keys.reverse()
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            value, key = values.pop(), keys.pop()
            while True:
                try:
                    producer.produce(settings.topics.input, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            second = int(time.monotonic() - started)
            timeline.slot(timeline.sent, second, 0)
            timeline.sent[second] += 1
            if i % 500 == 0:
                producer.poll(0)
                bar.update(500 if i else 1)
        bar.update(total - bar.n)
    producer.flush(60)


def read_scored(
    settings: Settings, expected: int, deadline: float, started: float, timeline: Timeline, schema: Path | None = None
) -> None:
    """`schema`: what the scored topic holds, if not scored events (the pass-through copies inputs)."""
    codec = AvroCodec(schema or settings.schemas.scored)
    reader = Consumer(
        {
            **settings.admin_config(),
            "group.id": f"loadgen-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([settings.topics.scored])
    seen = 0
    try:
        while seen < expected and time.monotonic() < deadline:
            # returns at once with what has arrived, so one arrival time holds for all of it
            messages = [m for m in reader.consume(1000, 0.002) if m.error() is None]
            if not messages:
                continue
            arrived = time.time_ns() / 1e6
            n = len(messages)
            raw = RawBatch(settings.topics.scored, np.zeros(n, np.int32), np.zeros(n, np.int64), [None] * n,
                           [m.value() for m in messages])  # fmt: skip
            event_times = codec.decode(raw)[0].columns["event_time"]
            second = int(time.monotonic() - started)
            timeline.slot(timeline.scored, second, 0)
            timeline.slot(timeline.latencies, second, list)
            timeline.scored[second] += n
            timeline.latencies[second].extend((arrived - event_times).tolist())
            seen += n
    finally:
        reader.close()


def fresh_topics(settings: Settings, run: str) -> Settings:
    tree = settings.model_dump(mode="python")
    tree["topics"] |= {name: f"loadgen-{name}-{run}" for name in ("input", "scored", "dlq", "drift")}
    tree["topics"]["alerts"] = None
    tree["kafka"]["consumer"]["group.id"] = f"loadgen-{run}"
    tree["features"]["key_prefix"] = f"loadgen-{run}"
    return Settings.model_validate(tree)


def forget_keys(settings: Settings) -> None:
    """Delete the run's Redis keys: left for their TTL, a week of runs would fill Redis with
    millions of cold keys and slow the next runs' scripts."""
    client = redis.Redis.from_url(settings.features.url)
    batch: list[bytes] = []
    try:
        for key in client.scan_iter(match=f"{settings.features.key_prefix}:*", count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except redis.ConnectionError:  # a run without Redis wrote nothing
        pass


def forget_topics(settings: Settings) -> None:
    """Delete the run's topics: a broker holding every past run's partitions (thousands after a
    day of runs) spends more of the shared cores on them, and later runs measure that."""
    delete_topics(settings.admin_config(), settings.topics.names())


def spawn_worker(config: Path, settings: Settings, port: int) -> subprocess.Popen[bytes]:
    topics = settings.topics
    env = {
        **os.environ,
        "STREAMER_TOPICS__INPUT": topics.input,
        "STREAMER_TOPICS__SCORED": topics.scored,
        "STREAMER_TOPICS__DLQ": topics.dlq,
        "STREAMER_TOPICS__DRIFT": str(topics.drift),
        "STREAMER_TOPICS__ALERTS": "",
        "STREAMER_KAFKA__CONSUMER__GROUP_ID": str(settings.kafka.consumer["group.id"]),
        "STREAMER_FEATURES__KEY_PREFIX": settings.features.key_prefix,
        "STREAMER_METRICS__PORT": str(port),
    }
    with open(f"/tmp/loadgen-worker-{port}.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "streamer", "run", "--config", str(config)], env=env, stderr=log)


def wait_ready(port: int, worker: subprocess.Popen[bytes], timeout_s: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"the worker was not ready within {timeout_s:.0f} s")


def sample_rss(pid: int, started: float, stop: threading.Event, timeline: Timeline) -> None:
    while not stop.wait(RSS_EVERY_S):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        timeline.rss_mib.append((time.monotonic() - started, kib / 1024))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(timeline: Timeline, rate: float, duration_s: float, ready_s: float | None) -> dict[str, Any]:
    latencies = np.concatenate([np.asarray(x) for x in timeline.latencies if x] or [np.empty(0)])
    skip = len(latencies) // 20  # the first 5% warm the path
    steady = latencies[skip:] if len(latencies) else latencies
    summary: dict[str, Any] = {
        "rate": rate,
        "duration_s": duration_s,
        "sent": int(sum(timeline.sent)),
        "scored": int(sum(timeline.scored)),
        "p50_ms": float(np.percentile(steady, 50)) if len(steady) else None,
        "p99_ms": float(np.percentile(steady, 99)) if len(steady) else None,
        "ready_s": ready_s,
    }
    if len(timeline.rss_mib) >= 2:
        settled = [mib for t, mib in timeline.rss_mib if t >= 60] or [mib for _, mib in timeline.rss_mib]
        summary |= {
            "rss_start_mib": settled[0],
            "rss_end_mib": settled[-1],
            "rss_max_mib": max(settled),
            "rss_growth": settled[-1] / settled[0] - 1,
        }
    return summary


def plot(timeline: Timeline, summary: dict[str, Any], out: Path) -> None:
    from matplotlib.figure import Figure

    rows = 3 if timeline.rss_mib else 2
    figure = Figure(figsize=(10, 3 * rows), layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True)
    axes[0].plot(timeline.sent, label="sent")
    axes[0].plot(timeline.scored, label="scored")
    axes[0].set_ylabel("events / s")
    axes[0].legend()
    seconds = [i for i, x in enumerate(timeline.latencies) if x]
    for q in (50, 99):
        axes[1].plot(seconds, [np.percentile(timeline.latencies[i], q) for i in seconds], label=f"p{q}")
    axes[1].set_ylabel("end-to-end ms")
    axes[1].set_yscale("log")
    axes[1].legend()
    if timeline.rss_mib:
        axes[2].plot(*zip(*timeline.rss_mib, strict=True))
        axes[2].set_ylabel("worker RSS MiB")
    axes[-1].set_xlabel("seconds")
    figure.suptitle(
        f"{summary['rate']:.0f} ev/s for {summary['duration_s']:.0f} s: p50 {summary['p50_ms']:.1f} ms, "
        f"p99 {summary['p99_ms']:.1f} ms"
    )
    figure.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "local.yaml")
    parser.add_argument(
        "--rate", default="auto", help="events/s; auto: half the maximum sustainable rate of the last `make bench`"
    )
    parser.add_argument("--duration", type=float, default=60, help="seconds of sending")
    parser.add_argument("--entities", type=int, default=ENTITIES, help="distinct cards")
    parser.add_argument("--skew", type=float, default=SKEW, help="Zipf exponent of card popularity; 0 = uniform")
    parser.add_argument("--drift-at", type=float, help="seconds in: shift amounts and add a new country")
    parser.add_argument("--spawn-worker", action="store_true", help="run `streamer run` as a process on fresh topics")
    parser.add_argument("--out", type=Path, default=ROOT / "load" / "results" / "loadgen")
    args = parser.parse_args()

    if args.rate == "auto":
        bench = ROOT / "load" / "results" / "bench.json"
        rate = json.loads(bench.read_text())["max_sustainable_events_per_s"] / 2 if bench.exists() else 8000.0
    else:
        rate = float(args.rate)
    settings = load_settings(args.config)
    worker = None
    ready_s = None
    stop_sampling = threading.Event()
    timeline = Timeline()
    if args.spawn_worker:
        settings = fresh_topics(settings, uuid.uuid4().hex[:8])
        topics = settings.topics
        create_topics(settings.admin_config(), topics.names(), topics.partitions, topics.replication_factor)
        port = free_port()
        worker = spawn_worker(args.config, settings, port)
        ready_s = wait_ready(port, worker)
        print(f"worker ready {ready_s:.1f} s after spawn (model loaded and warm, partitions assigned)")
    started = time.monotonic()
    if worker is not None:
        threading.Thread(target=sample_rss, args=(worker.pid, started, stop_sampling, timeline), daemon=True).start()
    expected = int(rate * args.duration)
    reader = threading.Thread(
        target=read_scored, args=(settings, expected, started + args.duration + 60, started, timeline)
    )
    reader.start()
    produce(settings, Generator(settings, args.entities, args.skew, args.drift_at), rate, args.duration, timeline)
    reader.join()
    stop_sampling.set()
    if worker is not None:
        worker.terminate()
        worker.wait(60)
        forget_keys(settings)
        forget_topics(settings)
    summary = summarize(timeline, rate, args.duration, ready_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    per_second = {
        "sent": timeline.sent,
        "scored": timeline.scored,
        "p50_ms": [float(np.percentile(x, 50)) if x else None for x in timeline.latencies],
        "p99_ms": [float(np.percentile(x, 99)) if x else None for x in timeline.latencies],
        "rss_mib": timeline.rss_mib,
    }
    args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, "per_second": per_second}, indent=1))
    plot(timeline, summary, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    if "rss_growth" in summary:
        print(f"RSS growth after the first minute: {summary['rss_growth']:.1%} ({summary['rss_start_mib']:.0f} → "
              f"{summary['rss_end_mib']:.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
