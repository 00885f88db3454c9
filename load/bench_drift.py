"""Cost of drift counting on the hot path: `DriftMonitor.observe` per micro-batch.

    .venv/bin/python load/bench_drift.py [--batch 1024] [--batches 400] [--window event_time|count]

The baseline covers the columns `analyze` baselines for configs/features/fraud.yaml (numeric and
entity columns, categorical columns) plus the score, built with the same binning functions the
monitor uses. Live batches are fresh synthetic payments (`streamer.demo.payments.synth_payments`) with
the entity aggregates replayed, and random scores. Prints the median time per batch and
events/s, and for scale the worker's Avro decode of the same batches (one stage of many): the
drift budget is 10% of the whole pipeline's time per event.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.drift.histograms import (
    SCORE,
    SCORE_EDGES,
    Baseline,
    FeatureBaseline,
    categorical_baseline,
    numeric_baseline,
)
from streamer.drift.settings import DriftSettings
from streamer.drift.windows import DriftMonitor
from streamer.feature_spec import Categorical, Entity, FeatureSpec, Numeric
from streamer.features import replay_aggregates
from streamer.records import Columns, RawBatch

ROOT = Path(__file__).resolve().parent.parent
SPEC = FeatureSpec.load(ROOT / "configs" / "features" / "fraud.yaml")
DAY_MS = 86_400_000


def payments(n: int, rng: np.random.Generator, start_ms: int) -> tuple[Columns, np.ndarray]:
    """Payment columns with entity aggregates, and scores shaped like a fraud model's."""
    columns, _ = synth_payments(n, rng, start_ms=start_ms)
    columns |= replay_aggregates(SPEC.entity_features(), columns, "event_time")
    return columns, rng.beta(0.6, 12.0, n)


def baseline_of(columns: Columns, scores: np.ndarray) -> Baseline:
    features: dict[str, FeatureBaseline] = {}
    for feature in SPEC.features:
        if isinstance(feature, Numeric | Entity):
            features.setdefault(feature.column, numeric_baseline(columns[feature.column]))
        elif isinstance(feature, Categorical):
            features.setdefault(feature.column, categorical_baseline(columns[feature.column]))
    return Baseline({**features, SCORE: numeric_baseline(scores, edges=SCORE_EDGES)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--window", choices=["event_time", "count"], default="event_time")
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    start_ms = (time.time_ns() // 1_000_000) - 2 * DAY_MS  # in the past: the clock-skew guard keeps all
    train, train_scores = payments(100_000, rng, start_ms)
    baseline = baseline_of(train, train_scores)
    live, scores = payments(args.batch * args.batches, rng, start_ms + DAY_MS)
    settings = DriftSettings(window=args.window, window_s=300, window_events=10_000)
    monitor = DriftMonitor(baseline, settings, "bench", 1)

    durations = []
    windows = 0
    for i in range(args.batches):
        rows = slice(i * args.batch, (i + 1) * args.batch)
        batch = {name: column[rows] for name, column in live.items()}
        started = time.perf_counter()
        windows += len(monitor.observe(batch, scores[rows], batch["event_time"]))
        durations.append(time.perf_counter() - started)
    windows += len(monitor.flush())

    per_batch = statistics.median(durations)
    print(f"columns: {len(baseline.features)} ({', '.join(baseline.features)})")
    print(f"{args.batches} batches of {args.batch}, {args.window} windows: {windows} windows emitted")
    print(f"observe: median {per_batch * 1e3:.3f} ms per batch, {args.batch / per_batch:,.0f} events/s")

    codec = AvroCodec(ROOT / "schemas" / "payment.avsc")
    decode = []
    for i in range(min(args.batches, 50)):
        rows = slice(i * args.batch, (i + 1) * args.batch)
        values: list[bytes | None] = list(codec.encode(rows_of({n: live[n][rows] for n in codec.field_types})))
        raw = RawBatch("bench", np.zeros(len(values), np.int32), np.arange(len(values)), [None] * len(values), values)
        started = time.perf_counter()
        codec.decode(raw)
        decode.append(time.perf_counter() - started)
    per_decode = statistics.median(decode)
    print(f"for scale, Avro decode of the same batches: median {per_decode * 1e3:.3f} ms per batch")
    print(f"observe / decode: {per_batch / per_decode:.0%}")


if __name__ == "__main__":
    main()
