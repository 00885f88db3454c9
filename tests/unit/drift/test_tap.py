"""The drift side tap without a broker: closed windows reach the gauges and TensorBoard."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamer.demo.payments import synth_payments
from streamer.drift.histograms import SCORE, SCORE_EDGES, Baseline, categorical_baseline, numeric_baseline
from streamer.drift.tap import HOLD_MS, DriftTap
from streamer.kafka.producer import KafkaSink
from streamer.metrics import Metrics
from streamer.records import now_ms
from streamer.settings import Settings
from tests.conftest import SCHEMAS


def drift_tap(tmp_path: Path, window_events: int, clock: Callable[[], int] = now_ms) -> tuple[DriftTap, Metrics]:
    """A tap on count windows of `window_events`, baselined on synthetic payments."""
    training, _ = synth_payments(20_000, np.random.default_rng(0))
    baseline = Baseline(
        {
            "amount": numeric_baseline(training["amount"]),
            "country": categorical_baseline(training["country"]),
            SCORE: numeric_baseline(np.random.default_rng(1).beta(0.6, 12.0, 20_000), edges=SCORE_EDGES),
        }
    )
    settings = Settings.model_validate(
        {
            "topics": {"input": "in", "scored": "out", "dlq": "dlq"},  # no drift topic: nothing is produced
            "schemas": {
                name: str(SCHEMAS / f"{file}.avsc")
                for name, file in (("input", "payment"), ("scored", "scored_payment"), ("dlq", "dlq_record"))
            },
            "model": {"path": str(tmp_path)},
            "event": {"entity_field": "card_id"},
            "drift": {
                "window": "count",
                "window_events": window_events,
                "min_events": window_events,
                "tensorboard_dir": str(tmp_path / "tb"),
            },
        }
    )
    metrics = Metrics.create()
    return DriftTap(settings, baseline, 1, KafkaSink({}, metrics), metrics, clock), metrics


def test_a_shifted_window_sets_the_gauges_and_writes_tensorboard_scalars(tmp_path: Path) -> None:
    tap, metrics = drift_tap(tmp_path, 5000)
    live, _ = synth_payments(5000, np.random.default_rng(2))
    live["amount"] = live["amount"] * 3
    tap.observe(live, np.random.default_rng(3).beta(0.6, 12.0, 5000), live["event_time"])

    def gauge(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert gauge("streamer_drift_status", feature="amount") == 2  # alert
    assert gauge("streamer_drift_status", feature="country") == 0  # ok
    psi = gauge("streamer_drift_value", feature="amount", metric="psi")
    assert psi is not None and psi >= 0.25
    assert gauge("streamer_drift_windows_total", status="alert") == 1
    import tensorflow as tf

    [events] = (tmp_path / "tb").glob("events.out.tfevents.*")
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events)) for v in e.summary.value}
    assert {"drift/amount/psi", "drift/country/linf", "drift/score/js_distance"} <= tags


def test_small_batches_are_held_and_counted_together_within_the_hold_bounds(tmp_path: Path) -> None:
    wall_ms = [1_000_000]
    tap, metrics = drift_tap(tmp_path, 1000, lambda: wall_ms[0])
    live, _ = synth_payments(1100, np.random.default_rng(2))
    scores = np.random.default_rng(3).beta(0.6, 12.0, 1100)

    def observe(rows: slice) -> None:
        tap.observe({name: column[rows] for name, column in live.items()}, scores[rows], live["event_time"][rows])

    def windows() -> float:
        [family] = [f for f in metrics.registry.collect() if f.name == "streamer_drift_windows"]
        return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))

    for start in range(0, 1000, 100):  # a full window's events, well under HOLD_EVENTS, no time passing
        observe(slice(start, start + 100))
    assert windows() == 0  # held, not counted yet
    wall_ms[0] += HOLD_MS
    observe(slice(1000, 1100))  # the oldest has waited HOLD_MS: everything held is counted
    assert windows() == 1
    assert tap.monitor.flush()[0].events == 100  # the window after the full one holds the last batch
