"""Cache-stage cost per micro-batch: the worker's one-round-trip enrich against per-key reads.

    .venv/bin/python load/bench_features.py [--redis redis://127.0.0.1:6379/0]

Same Redis, same batches, one run: (a) FeatureStore.enrich (4 card aggregates from the
in-memory state, their snapshots read once per card, plus one stored profile field per card, one
pipeline) and a checkpoint after each batch (the changed cards' snapshots written); (b) per-key
HGETALL, one round trip per event; (c) per-key HMGET, pipelined. Prints ms per batch and events/s, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from streamer.demo.payments import synth_payments
from streamer.feature_settings import FeatureStoreSettings
from streamer.feature_spec import FeatureSpec
from streamer.features import FeatureStore
from streamer.metrics import Metrics
from streamer.records import EventBatch

ROOT = Path(__file__).resolve().parent.parent
SPEC = FeatureSpec.load(ROOT / "configs" / "features" / "fraud.yaml")
SPEC_WITH_PROFILE = FeatureSpec.from_dict(
    {
        "features": [
            *SPEC.to_dict()["features"],
            {"name": "card_risk", "kind": "entity", "entity": "card_id", "key": "bench:profile:{id}", "field": "risk"},
        ]
    }
)


def batches(size: int, count: int) -> list[EventBatch]:
    columns, _ = synth_payments(size * count, np.random.default_rng(size))
    offsets = np.arange(size * count, dtype=np.int64)
    return [
        EventBatch(
            {k: v[i * size : (i + 1) * size] for k, v in columns.items()},
            np.zeros(size, np.int32),
            offsets[i * size : (i + 1) * size],
            [None] * size,
        )
        for i in range(count)
    ]


def redis_usec(client: redis.Redis) -> float:
    """Redis CPU spent in commands so far (INFO commandstats)."""
    return float(sum(stats["usec"] for stats in client.info("commandstats").values()))


def timed(run: Callable[[EventBatch], object], work: list[EventBatch]) -> float:
    """Median seconds per batch."""
    durations = []
    for batch in work:
        started = time.perf_counter()
        run(batch)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    results = {}
    for size in (256, 1024):
        work = batches(size, args.batches)
        for batch in work:
            for card in set(batch.columns["card_id"]):
                client.hset(f"bench:profile:{card}", mapping={"risk": "0.1"})
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        store = FeatureStore(
            FeatureStoreSettings(url=args.redis, key_prefix=prefix),
            SPEC_WITH_PROFILE,
            Metrics.create(),
            "event_time",
            "card_id",
        )
        store.enrich(work[0])  # connect

        def enrich_and_checkpoint(batch: EventBatch, store: FeatureStore = store) -> None:
            """The worst case: a checkpoint after every batch writes its cards' state."""
            store.enrich(batch)
            store.persist({0: int(batch.offsets.max()) + 1})
            store.committed()

        before = redis_usec(client)
        enrich = timed(enrich_and_checkpoint, work[1:])
        redis_us_per_event = (redis_usec(client) - before) / (size * (len(work) - 1))

        def per_key(batch: EventBatch) -> None:
            for card in batch.columns["card_id"].tolist():
                client.hgetall(f"bench:profile:{card}")

        def pipelined(batch: EventBatch) -> None:
            pipe = client.pipeline(transaction=False)
            for card in batch.columns["card_id"].tolist():
                pipe.hmget(f"bench:profile:{card}", ["risk"])
            pipe.execute()

        hgetall = timed(per_key, work[1:])
        hmget = timed(pipelined, work[1:])
        results[size] = {
            "enrich_ms": enrich * 1000,
            "enrich_redis_us_per_event": redis_us_per_event,
            "per_key_hgetall_ms": hgetall * 1000,
            "pipelined_hmget_ms": hmget * 1000,
            "enrich_events_per_s": size / enrich,
            "per_key_events_per_s": size / hgetall,
            "pipelined_events_per_s": size / hmget,
        }
        print(
            f"batch {size:5d}: enrich + checkpoint (4 aggregates, 1 stored field) {enrich * 1000:7.2f} ms "
            f"({size / enrich:9.0f} ev/s, Redis {redis_us_per_event:.2f} us/ev) | "
            f"per-key HGETALL (1 field) {hgetall * 1000:7.2f} ms "
            f"({size / hgetall:8.0f} ev/s) | pipelined HMGET (1 field) {hmget * 1000:6.2f} ms "
            f"({size / hmget:8.0f} ev/s) | enrich/per-key speed-up {hgetall / enrich:5.1f}x"
        )
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
