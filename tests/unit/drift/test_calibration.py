"""The demo is calibrated: load/loadgen.py's traffic, unchanged, raises no drift alert at the
demo config's cuts against the baseline of the demo model's training data; its injected drift
(amounts x3, a new country) alerts in the first window it reaches. No broker: the windows are
fed the columns the generator sends, with the per-card aggregates the worker would read from
Redis (`replay_aggregates`: the same arithmetic), starting from empty state as a run does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.demo.payments import LOAD_CARDS, LOAD_SKEW, load_payments, synth_payments
from streamer.drift.histograms import Baseline, categorical_baseline, numeric_baseline
from streamer.drift.metrics import WindowReport, evaluate
from streamer.drift.windows import DriftMonitor
from streamer.feature_spec import FeatureSpec
from streamer.features import replay_aggregates
from streamer.records import Columns
from streamer.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = load_settings(ROOT / "configs" / "local.yaml")
SPEC = FeatureSpec.load(ROOT / "configs" / "features" / "fraud.yaml")
NUMERIC = ["amount", "customer_tenure_days", *(f.name for f in SPEC.entity_features() if f.aggregate)]
CATEGORICAL = ["currency", "country", "card_country", "mcc", "channel", "entry_mode", "device_type", "merchant_id"]
RATE = 8000.0  # load/loadgen.py's rate without a bench result to take half of
WINDOWS = 10
# Count windows of min_events: the smallest judged window, where sampling noise is largest.
DRIFT = SETTINGS.drift.model_copy(update={"window": "count", "window_events": SETTINGS.drift.min_events})


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    """What `train_demo_model` baselines: its 60,000 events (seed 7), the first 90%."""
    columns, _ = synth_payments(60_000, np.random.default_rng(7))
    columns |= replay_aggregates(SPEC.entity_features(), columns, "event_time")
    train = {name: column[:54_000] for name, column in columns.items()}
    return Baseline(
        {name: numeric_baseline(train[name]) for name in NUMERIC}
        | {name: categorical_baseline(train[name]) for name in CATEGORICAL}
    )


def load(events: int, drift_from: int, seed: int) -> Columns:
    """`events` as the generator sends them at RATE, with drift injected from event `drift_from`."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, LOAD_CARDS + 1) ** LOAD_SKEW
    weights /= weights.sum()
    send_ms = 1_764_000_000_000 + np.arange(events) * 1000 / RATE
    clean = load_payments(drift_from, rng, weights, send_ms[:drift_from], False, "a")
    drifted = load_payments(events - drift_from, rng, weights, send_ms[drift_from:], True, "b")
    columns = {name: np.concatenate([clean[name], drifted[name]]) for name in clean}
    return columns | replay_aggregates(SPEC.entity_features(), columns, "event_time")


def windows(baseline: Baseline, columns: Columns) -> list[WindowReport]:
    monitor = DriftMonitor(baseline, DRIFT, "w1", 1)
    closed = monitor.observe(columns, np.zeros(len(columns["amount"])), columns["event_time"])
    return [evaluate(w, baseline, DRIFT) for w in closed]


def test_unchanged_load_raises_no_alert_in_ten_windows(baseline: Baseline) -> None:
    events = WINDOWS * DRIFT.min_events
    reports = windows(baseline, load(events, drift_from=events, seed=1))
    assert len(reports) == WINDOWS
    assert [{n: f.status for n, f in r.features.items() if f.status != "ok"} for r in reports] == [{}] * WINDOWS


def test_injected_drift_alerts_within_one_window(baseline: Baseline) -> None:
    n = DRIFT.min_events
    reports = windows(baseline, load(3 * n, drift_from=2 * n, seed=2))
    assert [r.status for r in reports] == ["ok", "ok", "alert"]
    assert {name for name, f in reports[-1].features.items() if f.status == "alert"} == {"amount", "country"}
    ranked = sorted(reports[-1].features, key=lambda name: -(reports[-1].features[name].metric("psi") or 0.0))
    assert {"amount", "country"} <= set(ranked[:6])  # the unjudged aggregates may still move more
