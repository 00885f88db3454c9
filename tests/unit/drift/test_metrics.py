"""Metrics against independent scipy/numpy references, and the verdicts they give: unchanged
data is ok, a shift or a new category alerts within one window."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import chebyshev, jensenshannon
from scipy.special import rel_entr

from streamer.drift.histograms import (
    SCORE,
    Baseline,
    bin_numeric,
    numeric_baseline,
)
from streamer.drift.metrics import METRICS, PSI_EPSILON, binned_ks, evaluate, js_distance, linf, psi
from streamer.drift.settings import DriftSettings, FeatureThresholds, Metric, Thresholds
from streamer.records import Columns
from tests.unit.drift.conftest import SETTINGS, N, one_window, payments

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


def test_evaluate_rejects_another_models_window(baseline: Baseline) -> None:
    window = one_window(baseline, *payments(200, 44))
    other = Baseline({**baseline.features, "z": numeric_baseline(np.arange(100.0), bins=4)})
    with pytest.raises(ValueError, match="column 'z' is binned in 12 bins, the baseline has 6"):
        evaluate(window, other, SETTINGS)


def test_every_metric_name_has_a_registry_entry() -> None:
    assert set(METRICS) == set(get_args(Metric))
