"""Quality windows against plain numpy references: AUC over every (positive, negative) pair,
calibration error bin by bin, precision and recall from the raw (score, label) pairs."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.quality.windows import (
    BINS,
    SCORE_EDGES,
    QualityAccumulator,
    QualityCounts,
    binned_auc,
    evaluate,
    merge,
    merge_by_window,
    score_bins,
)

HOUR_MS = 3_600_000


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The Mann-Whitney AUC: the share of (positive, negative) pairs ordered right, ties half."""
    positive, negative = scores[labels][:, None], scores[~labels][None, :]
    return float(np.mean((positive > negative) + 0.5 * (positive == negative)))


def reference_ece(scores: np.ndarray, labels: np.ndarray) -> float:
    edges = np.asarray(SCORE_EDGES)
    total = 0.0
    for b in range(BINS):
        last = b == BINS - 1
        inside = (scores >= edges[b]) & ((scores <= edges[b + 1]) if last else (scores < edges[b + 1]))
        if inside.any():
            total += inside.sum() * abs(scores[inside].mean() - labels[inside].mean())
    return total / len(scores)


def fraud_like(n: int, seed: int, base_rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Scores crowded near 0, positives higher: what a fraud model's look like."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < base_rate
    logits = rng.normal(-4.0, 1.5, n) + 3.0 * labels
    return 1 / (1 + np.exp(-logits)), labels


def one_window(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> QualityCounts:
    accumulator = QualityAccumulator(3600, threshold, "c1")
    accumulator.add(np.zeros(len(scores), np.int64), np.ones(len(scores), np.int64), scores, labels)
    [window] = accumulator.take()
    return window


def test_edges_are_fixed_increasing_and_bins_cover_zero_to_one() -> None:
    edges = np.asarray(SCORE_EDGES)
    assert len(edges) == BINS + 1 and edges[0] == 0.0 and edges[-1] == 1.0
    assert np.all(np.diff(edges) > 0)
    assert score_bins(np.array([0.0, edges[1], edges[1] - 1e-12, 1.0])).tolist() == [0, 1, 0, BINS - 1]


@pytest.mark.parametrize("seed", range(5))
def test_binned_auc_is_within_its_bound_of_the_exact_auc(seed: int) -> None:
    scores, labels = fraud_like(4000, seed)
    figures = evaluate(one_window(scores, labels))
    assert figures.auc is not None and figures.auc_bound is not None
    assert abs(figures.auc - exact_auc(scores, labels)) <= figures.auc_bound
    assert figures.auc_bound < 0.01  # log-odds bins keep the pairs sharing a bin few


def test_binned_auc_is_exact_when_no_bin_holds_both_labels() -> None:
    scores = np.array([0.001, 0.002, 0.3, 0.6, 0.95, 0.999])
    labels = np.array([False, False, True, False, True, True])
    counts = one_window(scores, labels)
    auc, bound = binned_auc(np.asarray(counts.positives), np.asarray(counts.negatives))
    assert bound == 0.0 and auc == pytest.approx(exact_auc(scores, labels), abs=1e-15)


def test_auc_is_undefined_without_both_labels() -> None:
    assert binned_auc(np.array([3, 0]), np.array([0, 0])) == (None, None)


@pytest.mark.parametrize("seed", range(3))
def test_calibration_error_equals_the_per_bin_reference(seed: int) -> None:
    scores, labels = fraud_like(3000, seed, base_rate=0.2)
    figures = evaluate(one_window(scores, labels))
    assert figures.calibration_error == pytest.approx(reference_ece(scores, labels), rel=1e-12)


def test_a_calibrated_model_has_a_small_calibration_error() -> None:
    rng = np.random.default_rng(7)
    scores = rng.random(200_000)
    labels = rng.random(200_000) < scores  # P(label | score) = score
    error = evaluate(one_window(scores, labels)).calibration_error
    assert error is not None and error < 0.01


def test_precision_recall_and_base_rate_at_the_threshold_are_exact() -> None:
    scores, labels = fraud_like(5000, 3)
    threshold = 0.2
    figures = evaluate(one_window(scores, labels, threshold))
    alert = scores >= threshold
    assert figures.precision == (labels & alert).sum() / alert.sum()
    assert figures.recall == (labels & alert).sum() / labels.sum()
    assert figures.base_rate == labels.mean()
    assert figures.counts.labelled == 5000


def test_a_score_on_the_threshold_alerts_as_the_worker_decides() -> None:
    counts = one_window(np.array([0.5, 0.5]), np.array([True, False]), threshold=0.5)
    assert (counts.true_positives, counts.false_positives) == (1, 1)


def test_no_alert_means_no_precision_rather_than_zero() -> None:
    figures = evaluate(one_window(np.array([0.1, 0.2]), np.array([True, False]), threshold=0.9))
    assert figures.precision is None and figures.recall == 0.0


def test_windows_split_by_event_time_and_model_version() -> None:
    accumulator = QualityAccumulator(3600, 0.5, "c1")
    times = np.array([0, HOUR_MS - 1, HOUR_MS, 5 * HOUR_MS + 7])
    accumulator.add(times, np.array([1, 2, 1, 1]), np.full(4, 0.7), np.ones(4, bool))
    windows = accumulator.take()
    assert [(w.start_ms, w.end_ms, w.model_version, w.labelled) for w in windows] == [
        (0, HOUR_MS, 1, 1),
        (0, HOUR_MS, 2, 1),
        (HOUR_MS, 2 * HOUR_MS, 1, 1),
        (5 * HOUR_MS, 6 * HOUR_MS, 1, 1),
    ]
    assert accumulator.take() == []  # taken: the next record is an increment from zero


def test_increments_of_two_consumers_and_late_labels_merge_to_one_consumers_counts() -> None:
    n = 6000
    scores, labels = fraud_like(n, 11)
    rng = np.random.default_rng(11)
    times = rng.integers(0, 4 * HOUR_MS, n)
    versions = rng.integers(1, 3, n)
    alone = QualityAccumulator(3600, 0.3, "alone")
    alone.add(times, versions, scores, labels)
    expected = alone.take()

    first, second = QualityAccumulator(3600, 0.3, "a"), QualityAccumulator(3600, 0.3, "b")
    taken: list[QualityCounts] = []
    for chunk in np.array_split(rng.permutation(n), 7):  # any order, late labels included
        consumer = first if chunk[0] % 2 else second
        consumer.add(times[chunk], versions[chunk], scores[chunk], labels[chunk])
        taken += consumer.take()
    merged = merge_by_window(taken)
    assert len(merged) == len(expected)
    for got, want in zip(merged, expected, strict=True):
        assert got.consumer_ids == ("a", "b")
        assert (got.positives, got.negatives) == (want.positives, want.negatives)
        assert np.allclose(got.score_sums, want.score_sums, rtol=1e-12)
        assert got.labelled == want.labelled and got.true_positives == want.true_positives
        a, b = evaluate(got), evaluate(want)
        assert (a.precision, a.recall, a.auc) == (b.precision, b.recall, b.auc)


def test_windows_of_other_bounds_or_thresholds_do_not_merge() -> None:
    one = one_window(np.array([0.5]), np.array([True]), threshold=0.5)
    other = one_window(np.array([0.5]), np.array([True]), threshold=0.6)
    with pytest.raises(ValueError, match="cannot merge"):
        merge([one, other])
    assert len(merge_by_window([one, other])) == 2
