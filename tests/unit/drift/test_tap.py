"""The drift side tap without a broker: closed windows reach the gauges and TensorBoard."""

from pathlib import Path

import numpy as np

from streamer.demo.payments import synth_payments
from streamer.drift.histograms import SCORE, SCORE_EDGES, Baseline, categorical_baseline, numeric_baseline
from streamer.drift.tap import DriftTap
from streamer.kafka.producer import KafkaSink
from streamer.metrics import Metrics
from streamer.settings import Settings
from tests.conftest import SCHEMAS


def test_a_shifted_window_sets_the_gauges_and_writes_tensorboard_scalars(tmp_path: Path) -> None:
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
            "drift": {"window": "count", "window_events": 5000, "tensorboard_dir": str(tmp_path / "tb")},
        }
    )
    metrics = Metrics.create()
    tap = DriftTap(settings, baseline, 1, KafkaSink({}, metrics), metrics)
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
