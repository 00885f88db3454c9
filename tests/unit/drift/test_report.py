"""The analyst's report: what drifted, since when, by how much; rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from streamer.demo.payments import synth_payments
from streamer.drift.histograms import (
    SCORE,
    SCORE_EDGES,
    Baseline,
    bin_numeric,
    categorical_baseline,
    numeric_baseline,
)
from streamer.drift.metrics import WindowReport, evaluate, sampling_noise
from streamer.drift.report import render_report
from streamer.drift.settings import DriftSettings
from streamer.drift.windows import DriftMonitor, FeatureCounts, WindowCounts

NUMERIC = ["amount", "customer_tenure_days"]
CATEGORICAL = ["country", "channel", "mcc"]
HOUR_MS = 3_600_000
START_MS = 1_700_000_000_000 // HOUR_MS * HOUR_MS
SETTINGS = DriftSettings(window_s=3600)
N = SETTINGS.min_events


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    rng = np.random.default_rng(0)
    columns, _ = synth_payments(50_000, rng)
    return Baseline(
        {
            **{name: numeric_baseline(columns[name]) for name in NUMERIC},
            **{name: categorical_baseline(columns[name]) for name in CATEGORICAL},
            SCORE: numeric_baseline(rng.beta(0.6, 12.0, 50_000), edges=SCORE_EDGES),
        }
    )


@pytest.fixture(scope="module")
def reports(baseline: Baseline) -> list[WindowReport]:
    """Eight hourly windows: amounts triple from the 4th, a new country from the 6th."""
    out = []
    for hour in range(8):
        rng = np.random.default_rng(100 + hour)
        columns, _ = synth_payments(N, rng, start_ms=START_MS + hour * HOUR_MS)
        columns["event_time"] = START_MS + hour * HOUR_MS + np.sort(rng.integers(0, HOUR_MS, N))
        if hour >= 3:
            columns["amount"] = columns["amount"] * 3
        if hour >= 5:
            columns["country"] = np.where(rng.random(N) < 0.1, "ZZ", columns["country"]).astype(object)
        monitor = DriftMonitor(baseline, SETTINGS, "w1", 1, clock=lambda: START_MS + 10 * 24 * HOUR_MS)
        windows = monitor.observe(columns, rng.beta(0.6, 12.0, N), columns["event_time"]) + monitor.flush()
        out += [evaluate(w, baseline, SETTINGS) for w in windows]
    return out


def test_the_first_screen_says_what_drifted_since_when_and_by_how_much(
    baseline: Baseline, reports: list[WindowReport], tmp_path: Path
) -> None:
    text = render_report(reports, baseline, tmp_path / "report.html", SETTINGS).read_text()
    assert "2 of 6 columns drifted: amount, country in the latest window" in text
    grid = text[text.index("<table class=grid>") : text.index("</table>")]
    rows = {m[0]: m[1] for m in re.findall(r"<tr><th>([a-z_]+)</th><td>([^<]*)</td>", grid)}
    assert rows["amount"] == "11-15 01:00" and rows["country"] == "11-15 03:00"  # windows 4 and 6 (from 22:00)
    assert rows["channel"] == rows["mcc"] == rows["customer_tenure_days"] == ""
    assert grid.count("background:#c62828") == 5 + 3  # amount 5 windows, country 3
    latest = text[text.index('<table id="latest">') :]
    assert re.search(r"<th>amount</th>.*?PSI [0-9.]+ &ge; 0.25 alert \(noise &le; 0.0\d+\)", latest)
    assert re.search(r"<th>country</th>.*?(PSI|L-inf) [0-9.]+ &ge; [0-9.]+ alert", latest)
    zz = reports[-1].window.features["country"].counts[-1]  # every OOV country is ZZ
    assert re.search(rf"<th>country</th>.*?[0-9.]+% new: <b>ZZ</b> {zz}</td>", latest)
    assert "numeric: PSI 0.1 / 0.25, JS distance 0.05 / 0.1" in text  # every cut, listed


def test_summaries_are_in_the_columns_units_and_close_to_the_raw_figures(baseline: Baseline) -> None:
    rng = np.random.default_rng(7)
    columns, _ = synth_payments(N, rng)
    amount = baseline.features["amount"]
    counts, missing = bin_numeric(np.append(columns["amount"], [np.nan] * 50), amount.edges)
    summary = amount.summarize(counts, missing, float(columns["amount"].sum()))
    assert summary.count == N and summary.missing_rate == pytest.approx(50 / (N + 50))
    edges = np.asarray(amount.edges)
    for q, value in zip((5, 50, 95), summary.quantiles, strict=True):
        exact = np.percentile(columns["amount"], q)
        bin_of = np.searchsorted(edges, exact)  # the quantile is off by at most its bin's width
        assert edges[bin_of - 1] <= value <= edges[bin_of]
    assert summary.mean == pytest.approx(columns["amount"].mean(), rel=1e-12)


def test_the_noise_band_covers_fresh_samples_of_the_baseline(baseline: Baseline) -> None:
    noise = sampling_noise(baseline, N)
    fresh = [evaluate(r.window, baseline, SETTINGS) for r in _unchanged(baseline, 20)]
    for name in baseline.features:
        for metric, band in noise[name].items():
            values = [r.features[name].metric(metric) for r in fresh]
            assert np.mean([v is not None and v <= band for v in values]) >= 0.8, (name, metric)


def _unchanged(baseline: Baseline, windows: int) -> list[WindowReport]:
    """Windows drawn from the baseline's own shares, as the noise band assumes."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(windows):
        features = {}
        for name, b in baseline.features.items():
            x = rng.multinomial(N, np.array([*b.counts, b.missing]) / (sum(b.counts) + b.missing))
            features[name] = FeatureCounts(tuple(x[:-1].tolist()), int(x[-1]))
        window = WindowCounts("count", i, i + 1, ("w",), 1, N, features)
        out.append(evaluate(window, baseline, SETTINGS))
    return out


def test_drift_report_needs_no_tensorflow() -> None:
    code = (
        "import sys, streamer.cli, streamer.drift.command, streamer.drift.report;"
        "print([m for m in ('tensorflow', 'keras') if m in sys.modules])"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium absent: `make stack-up` installs it")
def test_the_report_renders_in_headless_chromium(
    baseline: Baseline, reports: list[WindowReport], tmp_path: Path
) -> None:
    """A real browser lays the page out: the grid's red cells and the headline are on the first
    screen (1280 x 900), and the images load (a broken image would leave the page short)."""
    page = render_report(reports, baseline, tmp_path / "report.html", SETTINGS)
    pixels = _screenshot(page, tmp_path / "first_screen.png", 900)
    assert pixels.shape[:2] == (900, 1280)
    red = np.all(np.abs(pixels - np.array([0xC6, 0x28, 0x28]) / 255) < 0.02, axis=-1)
    green = np.all(np.abs(pixels - np.array([0x2E, 0x7D, 0x32]) / 255) < 0.02, axis=-1)
    rows_with_red = np.flatnonzero(red.any(axis=1))
    assert red.sum() > 2000 and green.sum() > 2000  # alert and ok cells of the grid
    assert rows_with_red.min() < 150  # the red headline sits at the top
    whole = _screenshot(page, tmp_path / "whole.png", 6000)
    blank_rows = np.all(whole > 0.99, axis=(1, 2))
    assert np.flatnonzero(~blank_rows).max() > 2500  # the trend figure and histograms loaded below the tables


def _screenshot(page: Path, shot: Path, height: int) -> np.ndarray:
    """RGB pixels of `page` in a 1280 px wide headless Chromium window `height` px tall."""
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         f"--window-size=1280,{height}", page.as_uri()],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    return np.asarray(imread(shot))[..., :3]
