"""Model versions against the real stack: a hot swap under load, a tampered version refused, and
a canary with a shadow, counted event by event on the scored topic."""

import shutil
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.lifecycle import entity_buckets, routed
from streamer.worker import Worker
from tests.conftest import SCHEMAS, drop_version, tamper, wrap_package
from tests.integration.conftest import (
    SettingsFactory,
    SteadyProducer,
    free_port,
    produce_payments,
    read_topic,
    samples,
    value,
)
from tests.integration.test_chaos import spawn, stop, wait_until_serving
from tests.integration.test_cli import write_config

SWAP_EVENTS = 50_000
RATE = 5_000.0


def scored_records(settings: object, expected: int) -> list[dict[str, object]]:
    brokers = str(settings.admin_config()["bootstrap.servers"])  # type: ignore[attr-defined]
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    topic = settings.topics.scored  # type: ignore[attr-defined]
    return [codec.decode_one(m.value) for m in read_topic(brokers, topic, expected, timeout_s=120)]


def test_new_version_swaps_in_under_load_and_a_tampered_one_is_refused(
    make_settings: SettingsFactory, demo_model: Path, tmp_path: Path
) -> None:
    """The worker runs as its own process, as deployed: an in-process producer would share the
    GIL with the model loading and starve the input, which is not what a swap costs."""
    models = tmp_path / "fraud"
    shutil.copytree(demo_model, models)
    port = free_port()
    settings = make_settings(
        model={"path": str(models), "alert_threshold": 0.1, "watch_interval_s": 0.2}, metrics={"port": port}
    )
    worker = spawn(write_config(settings, tmp_path / "config.yaml"), settings.worker_id)
    try:
        wait_until_serving(tmp_path / "config.yaml", settings.worker_id)
        producer = SteadyProducer(settings, total=SWAP_EVENTS, rate=RATE, prefix="swap-")
        producer.start()
        for scored_before, act in ((SWAP_EVENTS // 5, lambda: drop_version(models, 1, 2)),
                                   (3 * SWAP_EVENTS // 5, lambda: tamper(drop_version(models, 1, 3))),
                                   (SWAP_EVENTS, lambda: None)):  # fmt: skip
            while value(samples(port), "streamer_events_scored_total") < scored_before:
                time.sleep(0.1)
            act()
        producer.join()
        time.sleep(1)  # a watcher pass after the tampered version landed
        metrics = samples(port)
    finally:
        stop(worker)

    records = scored_records(settings, SWAP_EVENTS)
    assert {r["event_id"] for r in records} == set(producer.ids)  # nothing lost
    per_entity: dict[object, list[tuple[int, int, int]]] = defaultdict(list)
    for r in records:
        per_entity[r["entity_id"]].append((r["source_partition"], r["source_offset"], r["model_version"]))  # type: ignore[arg-type]
    switches = [sum(a[2] != b[2] for a, b in pairwise(seq)) for seq in map(sorted, per_entity.values())]
    assert max(switches) == 1  # from 1 to 2 once, never back, never to the tampered 3
    assert {r["model_version"] for r in records} == {1, 2}
    assert value(metrics, "streamer_model_versions_refused_total") == 1
    assert value(metrics, "streamer_model_swaps_total") == 1
    gap = value(metrics, "streamer_model_swap_gap_seconds")
    batches = value(metrics, "streamer_batches_total")
    normal = SWAP_EVENTS / RATE / batches  # the mean time from one batch to the next
    # the load happens on the watcher thread before the swap: the largest gap between batches (one
    # scored_at stamp each) from 3 s before the first version-2 event to 1 s after it
    stamps = np.unique([r["scored_at"] for r in records])
    swapped_at = min(r["scored_at"] for r in records if r["model_version"] == 2)
    window = stamps[(stamps >= swapped_at - 3000) & (stamps <= swapped_at + 1000)]
    print(
        f"swap gap {gap * 1000:.1f} ms; largest gap between batches while loading and swapping "
        f"{np.diff(window).max():.0f} ms; median gap {np.median(np.diff(stamps)):.0f} ms; "
        f"mean batch interval {normal * 1000:.1f} ms over {batches:.0f} batches"
    )
    assert gap < 1.0


def test_canary_is_sticky_by_entity_and_the_shadow_never_decides(
    make_settings: SettingsFactory, demo_model: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    models = tmp_path / "fraud"
    shutil.copytree(demo_model, models)
    wrap_package(models / "1", models / "2", lambda inputs, scores: scores * tf.constant(0.5, scores.dtype))
    settings = make_settings(
        model={"path": str(models), "policy": "pinned", "version": 1, "canary_share": 0.1, "shadow_share": 0.3}
    )
    sent = produce_payments(settings, 20_000, seed=21)
    assert Worker(settings).run(max_events=20_000, timeout_s=120).scored == 20_000

    records = scored_records(settings, 20_000)
    assert len({r["event_id"] for r in records}) == 20_000
    ids = np.array([r["entity_id"] for r in records], dtype=object)
    buckets = entity_buckets(ids)
    canary, shadowed = routed(buckets, 0.1), routed(buckets, 0.3)
    versions = np.array([r["model_version"] for r in records])
    assert np.array_equal(versions == 2, canary)  # every event of a canary entity, and only those
    share = len(set(ids[canary])) / len(set(ids))
    assert abs(share - 0.1) < 4 * np.sqrt(0.09 / len(set(ids)))
    scores = np.array([r["score"] for r in records])
    shadow = np.array([np.nan if r["shadow_score"] is None else r["shadow_score"] for r in records])
    assert np.array_equal(~np.isnan(shadow), shadowed)
    assert {r["shadow_version"] for r in records if r["shadow_score"] is not None} == {2}
    # the candidate halves v1's score: where v1 decides, the shadow is half the decision...
    np.testing.assert_allclose(shadow[shadowed & ~canary], scores[shadowed & ~canary] * 0.5, rtol=1e-6)
    # ...and where the canary decides, decision and shadow are the same model's score
    np.testing.assert_allclose(shadow[canary], scores[canary], rtol=1e-6)
    assert len(sent.values) == 20_000
