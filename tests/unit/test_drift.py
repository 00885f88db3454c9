"""Drift statistics: metrics against independent references, binning edge cases, windows,
merging, the drift-topic record and the report."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from typing import Any, get_args

import fastavro
import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats
from scipy.spatial.distance import chebyshev, jensenshannon
from scipy.special import rel_entr

from streamer.demo import synth_payments
from streamer.drift.histograms import (
    SCORE,
    SCORE_EDGES,
    Baseline,
    bin_categorical,
    bin_numeric,
    categorical_baseline,
    numeric_baseline,
    numeric_edges,
)
from streamer.drift.metrics import METRICS, PSI_EPSILON, binned_ks, evaluate, js_distance, linf, psi
from streamer.drift.records import from_avro_record, to_avro_record
from streamer.drift.settings import DriftSettings, FeatureThresholds, Metric, Thresholds
from streamer.drift.windows import DriftMonitor, WindowCounts, merge, merge_by_window, top_new_values
from streamer.records import Columns
from tests.conftest import SCHEMAS

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


@pytest.fixture(scope="module")
def training() -> tuple[Columns, np.ndarray]:
    return payments(100_000, seed=0)


@pytest.fixture(scope="module")
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


# --- metrics against independent references ------------------------------------------------------

BINOMIAL = stats.binom.pmf(np.arange(21), 20, 0.3)
POISSON = stats.poisson.pmf(np.arange(21), 6.0)


def test_psi_is_the_symmetric_kl_divergence_when_no_bin_is_empty() -> None:
    reference = float(np.sum(rel_entr(POISSON / POISSON.sum(), BINOMIAL) + rel_entr(BINOMIAL, POISSON / POISSON.sum())))
    assert psi(BINOMIAL, POISSON) == pytest.approx(reference, rel=1e-9)
    assert psi(BINOMIAL * 1000, POISSON * 7) == pytest.approx(reference, rel=1e-9)  # counts or shares
    assert psi(BINOMIAL, BINOMIAL) == 0.0


def test_psi_of_two_normals_tends_to_the_squared_mean_shift() -> None:
    """PSI is Jeffreys' divergence; for N(0, 1) against N(d, 1) it is d squared. (Bins whose
    probability rounds to 0 would take the share PSI_EPSILON: the range keeps them all positive.)"""
    edges = np.concatenate([[-np.inf], np.linspace(-5, 5.5, 1001), [np.inf]])
    p, q = np.diff(stats.norm.cdf(edges)), np.diff(stats.norm.cdf(edges, loc=0.5))
    assert psi(p, q) == pytest.approx(0.25, abs=1e-3)


def test_psi_gives_empty_bins_the_documented_share() -> None:
    p, q = np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.45, 0.45, 0.1, 0.0])
    ps, qs = np.where(p > 0, p, PSI_EPSILON), np.where(q > 0, q, PSI_EPSILON)
    assert psi(p, q) == pytest.approx(float(np.sum((qs - ps) * np.log(qs / ps))), rel=1e-12)
    assert np.isfinite(psi(p, q))


@pytest.mark.parametrize(
    ("p", "q"),
    [(BINOMIAL, POISSON), ([10, 0, 5, 0], [0, 3, 5, 1]), ([1, 1], [1, 1]), ([1, 0], [0, 1])],
)
def test_js_distance_equals_scipy_base_2(p: Any, q: Any) -> None:
    assert js_distance(p, q) == pytest.approx(float(jensenshannon(p, q, base=2)), abs=1e-12)


def test_js_distance_bounds() -> None:
    assert js_distance([3, 1], [3, 1]) == 0.0
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize(("p", "q"), [(BINOMIAL, POISSON), ([10, 0, 5, 0], [0, 3, 5, 1])])
def test_linf_equals_chebyshev_of_the_shares(p: Any, q: Any) -> None:
    p, q = np.asarray(p, float), np.asarray(q, float)
    assert linf(p, q) == pytest.approx(chebyshev(p / p.sum(), q / q.sum()), abs=1e-15)


def test_binned_ks_equals_ks_2samp_over_the_bin_indices() -> None:
    """The KS statistic of two samples of bin indices compares exactly the cumulative histograms."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4000), rng.normal(0.3, 1.2, 3000)
    edges = np.quantile(a, np.linspace(0, 1, 11))
    counts_a, _ = bin_numeric(a, edges)
    counts_b, _ = bin_numeric(b, edges)
    index_a, index_b = np.digitize(a, edges[1:-1]), np.digitize(b, edges[1:-1])  # 10 open-ended bins
    counts_a10 = np.bincount(index_a, minlength=10)
    counts_b10 = np.bincount(index_b, minlength=10)
    reference = stats.ks_2samp(index_a, index_b).statistic
    assert binned_ks(counts_a10, counts_b10) == pytest.approx(reference, abs=1e-12)
    # Under/overflow bins add two points to the cumulative curves; neither holds the largest gap here.
    assert binned_ks(counts_a, counts_b) == pytest.approx(reference, abs=1e-12)
    assert binned_ks(counts_a, counts_b) <= stats.ks_2samp(a, b).statistic + 1e-12


def test_metrics_reject_histograms_that_cannot_be_compared() -> None:
    with pytest.raises(ValueError, match="cannot be compared"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive total"):
        js_distance([0, 0], [1, 1])


# --- binning --------------------------------------------------------------------------------------


def test_numeric_edges_span_min_to_max_and_drop_ties() -> None:
    x = np.arange(1001, dtype=float)
    assert numeric_edges(x) == pytest.approx(np.linspace(0, 1000, 11).tolist(), abs=1e-9)
    discrete = np.array([0, 1, 1, 1, 1, 1, 1, 1, 2, 3] * 50, dtype=float)
    edges = numeric_edges(discrete)
    assert edges == sorted(set(edges)) and edges[0] == 0 and edges[-1] == 3
    assert numeric_edges(np.array([7.0, 7.0, np.nan])) == [7.0, 7.0]
    with pytest.raises(ValueError, match="no finite values"):
        numeric_edges(np.array([np.nan, np.inf]))


def test_bin_numeric_under_overflow_missing_and_a_closed_last_bin() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    values = np.array([-0.5, 0.0, 0.5, 1.0, 2.99, 3.0, 3.0001, np.nan, np.inf, -np.inf, None], dtype=object)
    counts, missing = bin_numeric(values, edges)
    #                   <0  [0,1) [1,2) [2,3]  >3
    assert counts.tolist() == [1, 2, 1, 2, 1]
    assert missing == 4


def test_bin_numeric_inner_bins_match_numpy_histogram() -> None:
    x = np.random.default_rng(4).normal(0, 1, 5000)
    edges = numeric_edges(x[:1000])
    counts, missing = bin_numeric(x, edges)
    inside = x[(x >= edges[0]) & (x <= edges[-1])]
    assert counts[1:-1].tolist() == np.histogram(inside, bins=edges)[0].tolist()
    assert counts[0] == np.sum(x < edges[0]) and counts[-1] == np.sum(x > edges[-1]) and missing == 0


def test_a_constant_column_has_one_closed_bin() -> None:
    counts, _ = bin_numeric(np.array([6.0, 7.0, 7.0, 8.0]), numeric_edges(np.array([7.0, 7.0])))
    assert counts.tolist() == [1, 2, 1]


def test_bin_categorical_oov_and_missing() -> None:
    values = np.array(["b", "a", "zz", None, "a", "c"], dtype=object)
    counts, missing = bin_categorical(values, ["a", "b", "c"])
    assert counts.tolist() == [2, 1, 1, 1] and missing == 1
    assert bin_categorical(np.array(["a", "q"]), ["a"])[0].tolist() == [1, 1]  # numpy strings
    assert bin_categorical(np.array([5411, 7995, 1]), ["7995", "5411"])[0].tolist() == [1, 1, 1]  # ints as text
    assert bin_categorical(np.array([5411, None], dtype=object), ["5411"])[0].tolist() == [1, 0]


def test_categorical_baseline_ranks_like_analyze() -> None:
    values = np.array(["x"] * 5 + ["b"] * 3 + ["a"] * 3 + ["c"] + [None] * 2, dtype=object)
    feature = categorical_baseline(values, top_k=2)
    assert feature.values == ("x", "a") and feature.counts == (5, 3, 4) and feature.missing == 2


def test_baseline_round_trips_and_reads_the_old_format(baseline: Baseline) -> None:
    assert Baseline.from_dict(json.loads(json.dumps(baseline.to_dict()))) == baseline
    old = {  # today's analyze: 9 inner deciles, open-ended first and last bins
        "features": {"amount": {"kind": "numeric", "edges": [float(i) for i in range(1, 10)], "counts": [1] * 10}},
        "score": {"kind": "numeric", "edges": [0.5], "counts": [3, 1], "missing": 0},
    }
    with pytest.raises(ValueError, match="'score': numeric edges need at least 2"):
        Baseline.from_dict(old)
    del old["score"]
    assert Baseline.from_dict(old).features["amount"].index(np.array([0.0, 9.5])).tolist() == [0, 9]


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"features": {"a": {"kind": "numeric", "edges": [0, 1], "counts": [1, 1]}}}, "'a': numeric baseline needs 3"),
        ({"features": {"a": {"kind": "numeric", "edges": [1, 0], "counts": [1, 1, 1]}}}, "strictly increasing"),
        ({"features": {"a": {"kind": "categorical", "values": ["x", "x"], "counts": [1, 1, 1]}}}, "unique"),
        ({"features": {"a": {"kind": "text", "counts": [1]}}}, "numeric or categorical"),
        ({"features": {SCORE: {"kind": "categorical", "values": ["x"], "counts": [1, 0]}}, "score": {}}, "rename"),
    ],
)
def test_baseline_errors_name_the_column(tree: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Baseline.from_dict(tree)


# --- acceptance: unchanged data is ok, a shift or a new category alerts within one window ---------


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_fresh_samples_of_the_training_distribution_are_ok(baseline: Baseline, seed: int) -> None:
    report = evaluate(one_window(baseline, *payments(N, seed)), baseline, SETTINGS)
    assert {name: f.status for name, f in report.features.items() if f.status != "ok"} == {}
    assert report.status == "ok"


def test_evaluate_equals_the_metric_functions_column_by_column(baseline: Baseline) -> None:
    columns, scores = payments(N, 31)
    columns["amount"] = columns["amount"] * 2
    columns["country"] = np.where(np.arange(N) % 9 == 0, None, columns["country"]).astype(object)
    report = evaluate(one_window(baseline, columns, scores), baseline, SETTINGS)
    for name, base in baseline.features.items():
        live = report.window.features[name]
        expected, actual = [*base.counts, base.missing], [*live.counts, live.missing]
        drift = report.features[name]
        assert drift.metric("psi") == pytest.approx(psi(expected, actual), rel=1e-12, abs=1e-15)
        assert drift.metric("js_distance") == pytest.approx(js_distance(expected, actual), rel=1e-12, abs=1e-15)
        assert drift.metric("linf") == pytest.approx(linf(expected, actual), rel=1e-12, abs=1e-15)
        if base.kind == "numeric":
            assert drift.metric("ks") == pytest.approx(binned_ks(base.counts, live.counts), rel=1e-12, abs=1e-15)
        else:
            assert drift.metric("ks") is None


@pytest.mark.parametrize("seed", [21, 22, 23])
@pytest.mark.parametrize("column", ["z", "amount"])
def test_a_half_sigma_mean_shift_alerts(
    baseline: Baseline, training: tuple[Columns, np.ndarray], column: str, seed: int
) -> None:
    columns, scores = payments(N, seed)
    columns[column] = columns[column] + 0.5 * training[0][column].std()
    report = evaluate(one_window(baseline, columns, scores), baseline, SETTINGS)
    assert report.features[column].status == "alert"
    assert {name for name, f in report.features.items() if f.status != "ok"} == {column}
    assert report.status == "alert"


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_a_new_category_alerts(baseline: Baseline, seed: int) -> None:
    columns, scores = payments(N, seed)
    columns["country"][np.random.default_rng(seed).random(N) < 0.1] = "XX"  # a country never seen in training
    report = evaluate(one_window(baseline, columns, scores), baseline, SETTINGS)
    assert report.features["country"].status == "alert"
    assert (
        columns["country"].tolist().count("XX") == one_window(baseline, columns, scores).features["country"].counts[-1]
    )


def test_a_column_arriving_empty_is_drift(baseline: Baseline) -> None:
    columns, scores = payments(N, 41)
    columns["amount"] = np.where(np.arange(N) % 5 == 0, np.nan, columns["amount"])
    assert evaluate(one_window(baseline, columns, scores), baseline, SETTINGS).features["amount"].status == "alert"


def test_an_all_missing_column_leaves_every_other_columns_ks_intact(baseline: Baseline) -> None:
    """The vectorised KS runs one cumulative sum across the columns laid end to end: an empty
    column (0/0 shares) once made the KS of every later numeric column NaN, so a 1 SD shift
    with a KS cut set was judged ok."""
    columns, scores = payments(N, 43)
    columns["amount"] = np.full(N, np.nan)  # the first numeric column in the baseline
    columns["z"] = columns["z"] + 1.0
    settings = DriftSettings(numeric=FeatureThresholds(ks=Thresholds(warn=0.1, alert=0.2)))
    report = evaluate(one_window(baseline, columns, scores), baseline, settings)
    assert report.features["amount"].metric("ks") is None
    for name in ["customer_tenure_days", "z", SCORE]:
        base, live = baseline.features[name], report.window.features[name]
        p, q = np.asarray(base.counts, float), np.asarray(live.counts, float)
        reference = np.max(np.abs(np.cumsum(q / q.sum()) - np.cumsum(p / p.sum())))
        assert report.features[name].metric("ks") == pytest.approx(reference, abs=1e-12)
    assert report.features["z"].metric("ks") == pytest.approx(0.38, abs=0.03)  # Phi(0.5) - Phi(-0.5) for a 1 SD shift
    assert report.features["z"].status == "alert"
    assert all(
        np.isfinite(v)
        for f in report.features.values()
        for v in (f.metric("psi"), f.metric("js_distance"), f.metric("linf"))
    )


def test_small_windows_are_insufficient_not_judged(baseline: Baseline) -> None:
    columns, scores = payments(100, 42)
    columns["z"] = columns["z"] + 5
    report = evaluate(one_window(baseline, columns, scores), baseline, SETTINGS)
    assert report.status == "insufficient" and {f.status for f in report.features.values()} == {"insufficient"}
    assert report.features["z"].metric("psi") > 1  # metrics are still there


def test_per_feature_overrides_replace_only_the_metrics_they_set(baseline: Baseline) -> None:
    settings = DriftSettings(
        features={
            "z": FeatureThresholds(psi=Thresholds(warn=5, alert=9), js_distance=None),
            "country": FeatureThresholds(ks=Thresholds(warn=0.1, alert=0.2)),
        }
    )
    assert settings.thresholds("z", "numeric") == {"psi": Thresholds(warn=5, alert=9)}
    assert settings.thresholds("country", "categorical") == settings.thresholds("mcc", "categorical")
    columns, scores = payments(N, 43)
    columns["z"] = columns["z"] + 0.5
    assert evaluate(one_window(baseline, columns, scores), baseline, settings).features["z"].status == "ok"


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match=r"warn 0\.3 > alert 0\.2"):
        Thresholds(warn=0.3, alert=0.2)
    with pytest.raises(ValidationError, match="every window would be 'insufficient'"):
        DriftSettings(window="count", window_events=100, min_events=1000)
    with pytest.raises(ValidationError, match="Extra inputs"):
        DriftSettings.model_validate({"window_size": 10})


def test_evaluate_rejects_another_models_window(baseline: Baseline) -> None:
    window = one_window(baseline, *payments(200, 44))
    other = Baseline({**baseline.features, "z": numeric_baseline(np.arange(100.0), bins=4)})
    with pytest.raises(ValueError, match="column 'z' is binned in 12 bins, the baseline has 6"):
        evaluate(window, other, SETTINGS)


# --- windows --------------------------------------------------------------------------------------


def test_event_time_windows_align_to_the_epoch_and_close_after_the_lateness(baseline: Baseline) -> None:
    settings = DriftSettings(window_s=60, allowed_lateness_s=10)
    monitor = DriftMonitor(baseline, settings, "w1", 3)
    columns, scores = payments(4, 45)
    base = 1_700_000_000_000 - 1_700_000_000_000 % 60_000  # a minute boundary

    def at(*offsets_s: float) -> list[WindowCounts]:
        times = np.array([base + round(o * 1000) for o in offsets_s], dtype=np.int64)
        n = len(times)
        return monitor.observe({k: v[:n] for k, v in columns.items()}, scores[:n], times)

    assert at(5, 30) == []
    assert at(59.999, 65) == []  # the next window opened; the first still takes late events
    assert at(15) == []
    assert at(69.999) == []  # closes once event time reaches its end + the allowed lateness
    [first] = at(70)
    assert (first.start_ms, first.end_ms, first.events) == (base, base + 60_000, 4)
    assert (first.kind, first.worker_ids, first.model_version) == ("event_time", ("w1",), 3)
    assert at(1) == [] and monitor.late_events == 1
    [second] = monitor.flush()
    assert (second.start_ms, second.end_ms, second.events) == (base + 60_000, base + 120_000, 3)


def test_windows_of_workers_that_started_at_different_times_line_up(baseline: Baseline) -> None:
    columns, scores = payments(2000, 46, start_ms=1_700_000_123_456)
    half = {k: v[1000:] for k, v in columns.items()}
    early = DriftMonitor(baseline, DriftSettings(window_s=600), "a", 1).observe(columns, scores, columns["event_time"])
    late = DriftMonitor(baseline, DriftSettings(window_s=600), "b", 1).observe(half, scores[1000:], half["event_time"])
    assert {w.start_ms for w in late} <= {w.start_ms for w in early}
    assert all(w.start_ms % 600_000 == 0 and w.end_ms - w.start_ms == 600_000 for w in early + late)


def test_events_from_a_clock_far_ahead_are_left_out(baseline: Baseline) -> None:
    now = 1_700_000_000_000
    monitor = DriftMonitor(baseline, DriftSettings(window_s=60, max_clock_skew_s=300), "w1", 1, clock=lambda: now)
    columns, scores = payments(3, 47)
    times = np.array([now - 1000, now + 20_000, now + 10 * DAY_MS], dtype=np.int64)
    assert monitor.observe(columns, scores, times) == []  # the bad clock did not close the window
    assert monitor.future_events == 1
    assert sum(w.events for w in monitor.flush()) == 2


def test_count_windows_close_every_n_events(baseline: Baseline) -> None:
    settings = DriftSettings(window="count", window_events=10, min_events=1)
    monitor = DriftMonitor(baseline, settings, "w1", 1)
    columns, scores = payments(40, 48, start_ms=1_000)

    def take(a: int, b: int) -> tuple[Columns, np.ndarray, np.ndarray]:
        return {k: v[a:b] for k, v in columns.items()}, scores[a:b], columns["event_time"][a:b]

    windows = monitor.observe(*take(0, 25))
    assert [w.events for w in windows] == [10, 10]
    assert windows[0].start_ms == columns["event_time"][0] and windows[0].end_ms == columns["event_time"][9] + 1
    assert [w.events for w in monitor.flush()] == [5]
    assert [w.events for w in monitor.observe(*take(25, 40))] == [10]  # a fresh window after the flush
    assert [w.events for w in monitor.flush()] == [5]


def test_observe_needs_every_baseline_column(baseline: Baseline) -> None:
    columns, scores = payments(10, 49)
    del columns["mcc"]
    with pytest.raises(ValueError, match=r"no column \['mcc'\]"):
        DriftMonitor(baseline, SETTINGS, "w1", 1).observe(columns, scores, columns["event_time"])


def test_two_workers_merged_equal_one_worker_seeing_every_event(baseline: Baseline) -> None:
    columns, scores = payments(30_000, 50, start_ms=1_699_999_200_000)  # a day from a whole hour: 24 windows
    columns["amount"][::97] = np.nan
    settings = DriftSettings(window_s=3600)
    owner = np.random.default_rng(50).random(30_000) < 0.4  # partitions split between two workers

    def run(worker: str, rows: np.ndarray) -> list[WindowCounts]:
        monitor = DriftMonitor(baseline, settings, worker, 1)
        out: list[WindowCounts] = []
        for batch in np.array_split(rows, 40):
            part = {k: v[batch] for k, v in columns.items()}
            out += monitor.observe(part, scores[batch], part["event_time"])
        return out + monitor.flush()

    alone = run("solo", np.arange(30_000))
    merged = merge_by_window(run("a", np.flatnonzero(owner)) + run("b", np.flatnonzero(~owner)))
    assert len(merged) == len(alone) == 24
    assert [_counts_only(replace(w, worker_ids=("solo",))) for w in merged] == [_counts_only(w) for w in alone]
    for m, a in zip(merged, alone, strict=True):  # sums: equal up to the order of float additions
        assert {n: f.total for n, f in m.features.items()} == pytest.approx({n: f.total for n, f in a.features.items()})
    assert merged[0].worker_ids == ("a", "b")
    assert sum(w.features["amount"].missing for w in merged) == len(columns["amount"][::97])
    assert sum(w.features["amount"].total for w in merged) == pytest.approx(np.nansum(columns["amount"]))
    assert sum(w.features[SCORE].total for w in merged) == pytest.approx(scores.sum())
    assert all(w.features["country"].total == 0.0 for w in merged)


def _counts_only(window: WindowCounts) -> WindowCounts:
    return replace(window, features={n: replace(f, total=0.0) for n, f in window.features.items()})


def test_merge_refuses_windows_of_other_bounds_or_models(baseline: Baseline) -> None:
    window = one_window(baseline, *payments(50, 51))
    with pytest.raises(ValueError, match="cannot merge"):
        merge([window, replace(window, model_version=2)])
    with pytest.raises(ValueError, match="nothing to merge"):
        merge([])


# --- drift topic ----------------------------------------------------------------------------------


def _without_logical_types(schema: Any) -> Any:
    """As streamer.codec reads schemas: timestamps stay plain longs."""
    if isinstance(schema, dict):
        bare = {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
        return bare["type"] if bare.keys() == {"type"} else bare
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


def test_avro_round_trip(baseline: Baseline) -> None:
    declared = json.loads((SCHEMAS / "drift_report.avsc").read_text())
    fastavro.parse_schema(declared)  # valid with its logical types too
    schema = fastavro.parse_schema(_without_logical_types(declared))
    columns, scores = payments(N, 52)
    columns["country"][:10] = None
    report = evaluate(one_window(baseline, columns, scores), baseline, SETTINGS)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, to_avro_record(report))
    buffer.seek(0)
    decoded = from_avro_record(fastavro.schemaless_reader(buffer, schema))  # type: ignore[arg-type]
    assert decoded == report
    assert decoded.features["country"].metric("ks") is None and decoded.window.features["country"].missing == 10


def test_new_categories_are_named_with_their_counts_and_merge_across_workers(baseline: Baseline) -> None:
    columns, scores = payments(N, 53)
    rng = np.random.default_rng(53)
    columns["country"] = np.where(rng.random(N) < 0.1, "ZZ", columns["country"]).astype(object)
    columns["country"][:7] = "QQ"
    columns["merchant_id"][:5] = "m-new"  # a long-tail column: its OOV values are not named
    truth = (("ZZ", columns["country"].tolist().count("ZZ")), ("QQ", 7))
    assert one_window(baseline, columns, scores).features["country"].new_values == truth
    assert one_window(baseline, columns, scores).features["merchant_id"].new_values == ()
    settings = DriftSettings(window="count", window_events=N // 2, min_events=N // 2)
    a, b = (
        DriftMonitor(baseline, settings, worker, 1).observe(
            {k: v[part] for k, v in columns.items()}, scores[part], columns["event_time"][part]
        )[0]
        for worker, part in (("a", slice(0, N // 2)), ("b", slice(N // 2, N)))
    )
    # count windows of two workers have their own bounds: line them up as event-time windows would be
    assert merge([a, replace(b, start_ms=a.start_ms, end_ms=a.end_ms)]).features["country"].new_values == truth


def test_the_new_value_summary_keeps_values_above_a_k_plus_first_of_the_events() -> None:
    counts = {"big": 500, **{f"v{i}": 3 for i in range(40)}}
    kept = top_new_values(counts, k=10)
    assert set(kept) == {"big"} and 500 - (sum(counts.values()) - sum(kept.values())) / 11 <= kept["big"] <= 500
    assert top_new_values({"a": 2, "b": 1}, k=10) == {"a": 2, "b": 1}  # exact below k distinct values


# --- report ---------------------------------------------------------------------------------------


def test_every_metric_name_has_a_registry_entry() -> None:
    assert set(METRICS) == set(get_args(Metric))


def test_the_settings_module_is_a_leaf() -> None:
    """`streamer.settings` loads the drift settings; that must not pull binning, metrics or drawing."""
    code = "import sys, streamer.drift.settings; print(sorted(m for m in sys.modules if m.startswith('streamer')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['streamer', 'streamer.drift', 'streamer.drift.settings']"
