"""Quality windows: per window of event time and model version, what the labels say of the scores.

A window holds raw counts only, so the windows of any number of label consumers, and the
updates one consumer makes as late labels arrive, add up (`merge_by_window`) to the figures one
consumer seeing every label would compute (`evaluate`):

- the confusion counts at the alert threshold (score >= threshold alerts, as the worker decides):
  precision and recall are exact;
- per label, a histogram of scores on fixed bins (`SCORE_EDGES`, the same in every process), and
  per bin the sum of the scores: AUC and the calibration error come from these.

AUC from the histograms counts a (positive, negative) pair in the same bin as half right. The
exact AUC (ties counted half, as the Mann-Whitney statistic) differs by at most half the share of
pairs that fall in one bin, `Quality.auc_bound`, reported beside every AUC. The bins are uniform
in log-odds, finest near 0 and 1 where a rare-event model's scores crowd, so the bound stays small
where a uniform grid would put most events in its first bin.

The calibration error is the expected calibration error on those bins: the event-weighted mean,
over bins, of |mean score - share of positives|; exact given the bins, since each bin carries
the sum of its scores.

    accumulator = QualityAccumulator(window_s=3600, threshold=0.9)
    accumulator.add(event_time_ms, model_version, score, label)   # one batch of joined labels
    windows = merge_by_window(accumulator.take() + windows_of_other_consumers)
    figures = [evaluate(w) for w in windows]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

BINS = 100
_LOGIT_LIMIT = 9.2  # sigmoid(±9.2): 1e-4 and 1 - 1e-4, the innermost edges
# 0, then BINS - 1 inner edges uniform in log-odds, then 1; rounded so every process has the same.
SCORE_EDGES: tuple[float, ...] = (
    0.0,
    *np.round(1 / (1 + np.exp(-np.linspace(-_LOGIT_LIMIT, _LOGIT_LIMIT, BINS - 1))), 9).tolist(),
    1.0,
)
_INNER = np.asarray(SCORE_EDGES[1:-1])


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The bin of each score: i holds [edges[i], edges[i+1]); the last bin is closed at 1."""
    return np.searchsorted(_INNER, np.asarray(scores, dtype=np.float64), side="right")


@dataclass(frozen=True)
class QualityCounts:
    """One window's raw counts for one model version, from one or more consumers."""

    start_ms: int
    end_ms: int  # exclusive
    model_version: int
    threshold: float
    consumer_ids: tuple[str, ...]
    positives: tuple[int, ...]  # per bin: labelled events with label true
    negatives: tuple[int, ...]
    score_sums: tuple[float, ...]  # per bin: the sum of the scores of both labels
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    @property
    def labelled(self) -> int:
        return self.true_positives + self.false_positives + self.false_negatives + self.true_negatives


@dataclass(frozen=True)
class Quality:
    """A window's figures; None where the counts cannot define them (no alert, no positive...)."""

    counts: QualityCounts
    base_rate: float | None
    precision: float | None
    recall: float | None
    auc: float | None
    auc_bound: float | None  # |exact AUC - auc| <= auc_bound
    calibration_error: float | None


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def binned_auc(positives: np.ndarray, negatives: np.ndarray) -> tuple[float | None, float | None]:
    """AUC from per-bin counts of positives and negatives, and its bound (see the module)."""
    p, n = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    pairs = p.sum() * n.sum()
    if not pairs:
        return None, None
    below = np.cumsum(n) - n  # negatives in lower bins
    same = float(p @ n)
    return float((p @ below + 0.5 * same) / pairs), 0.5 * same / pairs


def calibration_error(positives: np.ndarray, negatives: np.ndarray, score_sums: np.ndarray) -> float | None:
    """Sum over bins of |sum of scores - positives|, over the events: the weighted |mean - rate|."""
    events = float(np.sum(positives) + np.sum(negatives))
    if not events:
        return None
    return float(np.abs(np.asarray(score_sums, dtype=np.float64) - np.asarray(positives)).sum() / events)


def evaluate(w: QualityCounts) -> Quality:
    auc, bound = binned_auc(np.asarray(w.positives), np.asarray(w.negatives))
    tp, fp, fn = w.true_positives, w.false_positives, w.false_negatives
    return Quality(
        w,
        base_rate=_ratio(tp + fn, w.labelled),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        auc=auc,
        auc_bound=bound,
        calibration_error=calibration_error(np.asarray(w.positives), np.asarray(w.negatives), np.asarray(w.score_sums)),
    )


def _key(w: QualityCounts) -> tuple[int, int, int, float]:
    return w.start_ms, w.end_ms, w.model_version, w.threshold


def merge(windows: Sequence[QualityCounts]) -> QualityCounts:
    """Counts of the same window, model version and threshold, added up."""
    if not windows:
        raise ValueError("nothing to merge")
    first = windows[0]
    for w in windows[1:]:
        if _key(w) != _key(first) or len(w.positives) != len(first.positives):
            raise ValueError(f"cannot merge quality window {_key(w)} into {_key(first)}")

    def total(name: str) -> int:
        return sum(getattr(w, name) for w in windows)

    return QualityCounts(
        first.start_ms,
        first.end_ms,
        first.model_version,
        first.threshold,
        tuple(sorted({i for w in windows for i in w.consumer_ids})),
        tuple(np.sum([w.positives for w in windows], axis=0).tolist()),
        tuple(np.sum([w.negatives for w in windows], axis=0).tolist()),
        tuple(np.sum([w.score_sums for w in windows], axis=0).tolist()),
        total("true_positives"),
        total("false_positives"),
        total("false_negatives"),
        total("true_negatives"),
    )


def merge_by_window(windows: Iterable[QualityCounts]) -> list[QualityCounts]:
    """The group's view: one window per bounds, model version and threshold, in time order."""
    groups: dict[tuple[int, int, int, float], list[QualityCounts]] = {}
    for w in windows:
        groups.setdefault(_key(w), []).append(w)
    return [merge(groups[key]) for key in sorted(groups)]


@dataclass
class _Open:
    positives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    score_sums: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    confusion: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))  # tp, fp, fn, tn


class QualityAccumulator:
    """One consumer's counts since it last handed them on: labels for any window, late ones too,
    add to their event's window; `take` returns them and starts again from zero, so each record
    published is an increment and the increments of every consumer add up."""

    def __init__(self, window_s: float, threshold: float, consumer_id: str) -> None:
        self.window_ms = max(1, round(window_s * 1000))
        self.threshold = threshold
        self.consumer_id = consumer_id
        self._open: dict[tuple[int, int], _Open] = {}  # (window number, model version) → counts

    def __len__(self) -> int:
        return len(self._open)

    def add(self, event_time_ms: np.ndarray, model_version: np.ndarray, score: np.ndarray, label: np.ndarray) -> None:
        """Count joined labels: per event, its event time, the version that decided, its score and label."""
        times = np.asarray(event_time_ms, dtype=np.int64)
        if not len(times):
            return
        pairs = np.stack([times // self.window_ms, np.asarray(model_version, dtype=np.int64)], axis=1)
        groups, which = np.unique(pairs, axis=0, return_inverse=True)
        which = which.reshape(-1)
        scores = np.asarray(score, dtype=np.float64)
        bins = score_bins(scores)
        positive = np.asarray(label, dtype=bool)
        alert = scores >= self.threshold
        cell = np.where(positive, np.where(alert, 0, 2), np.where(alert, 1, 3))  # tp, fp, fn, tn
        width = len(groups)
        per = np.bincount(which * BINS + bins, weights=positive, minlength=width * BINS).reshape(width, BINS)
        every = np.bincount(which * BINS + bins, minlength=width * BINS).reshape(width, BINS)
        sums = np.bincount(which * BINS + bins, weights=scores, minlength=width * BINS).reshape(width, BINS)
        confusion = np.bincount(which * 4 + cell, minlength=width * 4).reshape(width, 4)
        for j, (number, version) in enumerate(groups.tolist()):
            window = self._open.setdefault((number, version), _Open())
            positives = per[j].astype(np.int64)
            window.positives += positives
            window.negatives += every[j] - positives
            window.score_sums += sums[j]
            window.confusion += confusion[j]

    def take(self) -> list[QualityCounts]:
        """The counts since the last call, one per window and version, in time order; then zero."""
        taken = [
            QualityCounts(
                number * self.window_ms,
                (number + 1) * self.window_ms,
                version,
                self.threshold,
                (self.consumer_id,),
                tuple(w.positives.tolist()),
                tuple(w.negatives.tolist()),
                tuple(w.score_sums.tolist()),
                *(int(c) for c in w.confusion),
            )
            for (number, version), w in sorted(self._open.items())
        ]
        self._open.clear()
        return taken

    def clear(self) -> None:
        """Forget what was counted since the last `take` (its labels are read again)."""
        self._open.clear()
