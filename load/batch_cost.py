"""The worker's fixed cost per batch, in process: what a batch costs before counting its events.

    .venv/bin/python load/batch_cost.py [--config configs/local.yaml] [--batches 400] [--profile]

A Worker is built as `streamer run` builds it and its model loaded and warmed, but no broker and
no Redis are used: the producer points where nothing listens (records stay in librdkafka's
queue) and the entity features are their defaults. Batches of 1 and of 64 payments then go
through the calls the loop makes per batch: decode, admit, and `Worker._score` (model call,
drift, encode, produce, checkpoint, metrics). Both sizes pad to the same model shape, so
per event = (t(64) - t(1)) / 63 and fixed = t(1) - per event; medians of `--batches` batches,
in wall and in CPU time.
`--profile` prints a cProfile of batches of 64, the functions that cost the most first.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import numpy as np

from streamer import pipeline
from streamer.demo.payments import synth_payments
from streamer.features import Enrichment
from streamer.lifecycle import ModelLifecycle
from streamer.records import RawBatch
from streamer.settings import Settings, load_settings
from streamer.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "127.0.0.1:1"  # nothing listens: produced records never leave the process


def offline_worker(settings: Settings) -> Worker:
    """A Worker whose model is loaded and warm, started no further than that (no Kafka, no Redis)."""
    tree = settings.model_dump(mode="python")
    tree["kafka"]["common"] = {**tree["kafka"]["common"], "bootstrap.servers": NOWHERE}
    tree["metrics"]["enabled"] = False
    worker = Worker(Settings.model_validate(tree))
    worker.lifecycle = ModelLifecycle(
        worker.settings.model,
        worker.admission.load,
        worker.settings.batching.allowed_batch_sizes,
        None,
        worker._export_serving,
        lambda version, reason: None,
    )
    model = worker.lifecycle.start().primary
    worker._entity_fields = pipeline.entity_fields(worker.settings.event.entity_field, model)
    if worker.settings.drift.enabled:
        worker.drift = worker._drift_tap(model)
    return worker


def raw_batches(worker: Worker, size: int, count: int) -> list[RawBatch]:
    columns, _ = synth_payments(size * count, np.random.default_rng(size))
    values = worker.input_codec.encode_columns(columns, size * count)
    keys = [card.encode() for card in columns["card_id"]]
    return [
        RawBatch(
            worker.settings.topics.input,
            np.zeros(size, np.int32),
            np.arange(i * size, (i + 1) * size, dtype=np.int64),
            keys[i * size : (i + 1) * size],
            values[i * size : (i + 1) * size],
        )
        for i in range(count)
    ]


def one_batch(worker: Worker, raw: RawBatch) -> None:
    """What `Worker._step` and `_finish_in_flight` do for a batch, minus the poll and Redis."""
    assert worker.lifecycle is not None and worker.lifecycle.serving is not None
    serving = worker.lifecycle.serving
    with worker.metrics.time_stage("decode"):
        decoded, _ = worker.input_codec.decode(raw)
        events, _ = pipeline.admit(
            decoded, worker._entity_fields, worker.settings.event.missing_entity, pipeline.needed_inputs(serving)
        )
    features = serving.primary.spec.entity_features()
    n = len(events)
    defaults = {f.name: np.full(n, f.default, np.float32) for f in features}
    with worker.metrics.time_stage("features"):
        enrichment = Enrichment(defaults, np.zeros(n, bool))
    worker._score(events, enrichment)


def seconds_per_batch(worker: Worker, ones: list[RawBatch], sixty_fours: list[RawBatch]) -> dict[str, float]:
    """Median wall and CPU seconds (the process's, TensorFlow's threads included: steadier than
    wall time on cores other work shares) per batch of 1 and of 64, the two sizes alternating."""
    times: dict[str, list[float]] = {"wall_1": [], "cpu_1": [], "wall_64": [], "cpu_64": []}
    for one, sixty_four in zip(ones, sixty_fours, strict=True):
        for size, raw in (("1", one), ("64", sixty_four)):
            wall, cpu = time.perf_counter(), time.process_time()
            one_batch(worker, raw)
            times[f"cpu_{size}"].append(time.process_time() - cpu)
            times[f"wall_{size}"].append(time.perf_counter() - wall)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "local.yaml")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    worker = offline_worker(load_settings(args.config))
    ones, sixty_fours = raw_batches(worker, 1, args.batches), raw_batches(worker, 64, args.batches)
    seconds_per_batch(worker, ones[:50], sixty_fours[:50])  # first calls: caches, lazy imports
    medians = seconds_per_batch(worker, ones, sixty_fours)
    for clock in ("wall", "cpu"):
        single, full = medians[f"{clock}_1"], medians[f"{clock}_64"]
        per_event = (full - single) / 63
        print(f"{clock}: batch of 1 {single * 1e3:.3f} ms, batch of 64 {full * 1e3:.3f} ms; "
              f"fixed per batch {(single - per_event) * 1e3:.3f} ms, per event {per_event * 1e6:.1f} µs")  # fmt: skip
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(seconds_per_batch, worker, sixty_fours, sixty_fours)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
