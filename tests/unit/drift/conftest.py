"""Shared drift test data: demo payments with a standard normal column `z`, their baseline
(session-scoped: 100,000 events are slow to draw and bin), and one window of a sample."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.demo.payments import synth_payments
from streamer.drift.histograms import (
    SCORE,
    SCORE_EDGES,
    Baseline,
    categorical_baseline,
    numeric_baseline,
)
from streamer.drift.settings import DriftSettings
from streamer.drift.windows import DriftMonitor, WindowCounts
from streamer.records import Columns

NUMERIC = ["amount", "customer_tenure_days", "z"]
CATEGORICAL = ["currency", "country", "card_country", "mcc", "channel", "entry_mode", "device_type", "merchant_id"]
DAY_MS = 86_400_000
SETTINGS = DriftSettings()
N = SETTINGS.min_events  # the documented sample size


def payments(n: int, seed: int, start_ms: int = 0) -> tuple[Columns, np.ndarray]:
    """Demo payments plus a standard normal column `z`, and fraud-like scores."""
    rng = np.random.default_rng(seed)
    columns, _ = synth_payments(n, rng, start_ms=start_ms)
    columns["z"] = rng.normal(0.0, 1.0, n)
    return columns, rng.beta(0.6, 12.0, n)


@pytest.fixture(scope="session")
def training() -> tuple[Columns, np.ndarray]:
    return payments(100_000, seed=0)


@pytest.fixture(scope="session")
def baseline(training: tuple[Columns, np.ndarray]) -> Baseline:
    columns, scores = training
    return Baseline(
        {
            **{name: numeric_baseline(columns[name]) for name in NUMERIC},
            **{name: categorical_baseline(columns[name]) for name in CATEGORICAL},
            SCORE: numeric_baseline(scores, edges=SCORE_EDGES),
        }
    )


def one_window(baseline: Baseline, columns: Columns, scores: np.ndarray) -> WindowCounts:
    """All of a sample as one count window."""
    n = len(scores)
    settings = DriftSettings(window="count", window_events=n, min_events=min(n, N))
    [window] = DriftMonitor(baseline, settings, "w1", 1).observe(columns, scores, columns["event_time"])
    return window
