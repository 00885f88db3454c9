"""Metrics of a window against the baseline, and the verdict they give.

Per column, of the live window q against the baseline p (both normalized; the missing count is
one more bin, so a column that starts arriving empty is drift):

- PSI = sum (q - p) ln(q / p). An empty bin takes the proportion PSI_EPSILON = 1e-4 (Evidently's
  convention), so a new category in 5% of events adds 0.05 ln(0.05 / 1e-4) = 0.31, not infinity.
- Jensen-Shannon distance, base 2 (scipy.spatial.distance.jensenshannon(p, q, base=2)): in [0, 1].
- L-infinity: max |q - p| over bins (TFDV's categorical drift metric).
- binned KS: max |Q - P| of the cumulative histograms, numeric columns only (bins are ordered;
  missing left out). It is the two-sample KS statistic evaluated at the bin edges.

`psi`, `js_distance`, `linf` and `binned_ks` compute one column plainly: they are the reference.
`evaluate` computes every column at once through `METRICS`, the registry: a metric is one entry
there (a segmented numpy reduction over the columns laid end to end), plus its name in
`settings.Metric` and its cuts in `settings.FeatureThresholds`. A replayed backlog closes a window
every few hundred events, so per-column numpy calls would cost the hot path more than counting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from streamer.drift.histograms import Baseline, FeatureBaseline
from streamer.drift.settings import SEVERITY, DriftSettings, Kind, Metric, Status, Thresholds
from streamer.drift.windows import FeatureCounts, WindowCounts

PSI_EPSILON = 1e-4  # proportion an empty bin takes in PSI, so ln(q / p) stays finite


def proportions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if c.ndim != 1 or total <= 0 or np.any(c < 0):
        raise ValueError("a histogram needs non-negative counts with a positive total")
    return c / total


def _pair(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p, q = proportions(expected), proportions(actual)
    if p.shape != q.shape:
        raise ValueError(f"histograms of {len(p)} and {len(q)} bins cannot be compared")
    return p, q


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of `actual` against `expected` (counts or shares); empty bins
    take the share PSI_EPSILON."""
    p, q = _pair(expected, actual)
    p = np.where(p > 0, p, PSI_EPSILON)
    q = np.where(q > 0, q, PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance in bits: sqrt of the JS divergence, in [0, 1]."""
    p, q = _pair(expected, actual)
    m = (p + q) / 2

    def divergence(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return float(np.sqrt(max((divergence(p) + divergence(q)) / 2, 0.0)))


def linf(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """L-infinity distance: the largest change in one bin's share."""
    p, q = _pair(expected, actual)
    return float(np.max(np.abs(q - p)))


def binned_ks(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """KS statistic of two histograms over the same ordered bins."""
    p, q = _pair(expected, actual)
    return float(np.max(np.abs(np.cumsum(q) - np.cumsum(p))))


@dataclass(frozen=True)
class Segments:
    """Every column's histogram laid end to end, as shares: `p` (baseline) and `q` (live) with
    the missing slot last in each column; `p_bins` and `q_bins` the shares of the binned values
    alone (missing left out; 0 for a column with no binned value, never 0/0: the running sums of
    `cumulative` cross columns, and one NaN would spread to every later column)."""

    starts: np.ndarray  # first slot of each column
    segment: np.ndarray  # column of each slot
    p: np.ndarray
    q: np.ndarray
    p_bins: np.ndarray
    q_bins: np.ndarray

    @classmethod
    def of(cls, expected: Sequence[FeatureBaseline], actual: Sequence[FeatureCounts]) -> Segments:
        widths = np.array([len(b.counts) + 1 for b in expected])  # bins, then the missing slot
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
        segment = np.repeat(np.arange(len(widths)), widths)
        e = np.concatenate([[*b.counts, b.missing] for b in expected]).astype(np.float64)
        a = np.concatenate([[*c.counts, c.missing] for c in actual]).astype(np.float64)
        e_total, a_total = np.add.reduceat(e, starts), np.add.reduceat(a, starts)
        if np.any(e_total <= 0) or np.any(a_total <= 0) or np.any(e < 0) or np.any(a < 0):
            raise ValueError("a histogram needs non-negative counts with a positive total")
        binned = np.ones(len(e), dtype=bool)
        binned[starts + widths - 1] = False

        def bin_shares(x: np.ndarray) -> np.ndarray:
            x = np.where(binned, x, 0.0)
            total = np.add.reduceat(x, starts)[segment]
            return np.divide(x, total, out=np.zeros_like(x), where=total > 0)

        p, q = e / e_total[segment], a / a_total[segment]
        return cls(starts, segment, p, q, bin_shares(e), bin_shares(a))

    def sum(self, x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, self.starts)

    def max(self, x: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(x, self.starts)

    def cumulative(self, x: np.ndarray) -> np.ndarray:
        """Running sums restarting at each column."""
        total = np.cumsum(x)
        return total - np.concatenate([[0.0], total[self.starts[1:] - 1]])[self.segment]


def _psi_segments(s: Segments) -> np.ndarray:
    p, q = np.where(s.p > 0, s.p, PSI_EPSILON), np.where(s.q > 0, s.q, PSI_EPSILON)
    return s.sum((q - p) * np.log(q / p))


def _js_segments(s: Segments) -> np.ndarray:
    m = (s.p + s.q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(s.p > 0, s.p * np.log2(s.p / m), 0.0) + np.where(s.q > 0, s.q * np.log2(s.q / m), 0.0)
    return np.sqrt(np.maximum(s.sum(terms) / 2, 0.0))


def _linf_segments(s: Segments) -> np.ndarray:
    return s.max(np.abs(s.q - s.p))


def _ks_segments(s: Segments) -> np.ndarray:
    return s.max(np.abs(s.cumulative(s.q_bins) - s.cumulative(s.p_bins)))


@dataclass(frozen=True)
class MetricDefinition:
    """How a metric is computed for every column of a window at once; `ordered`: only numeric
    columns with a binned value on both sides have it (None otherwise)."""

    every_column: Callable[[Segments], np.ndarray]
    ordered: bool = False


METRICS: dict[Metric, MetricDefinition] = {
    "psi": MetricDefinition(_psi_segments),
    "js_distance": MetricDefinition(_js_segments),
    "linf": MetricDefinition(_linf_segments),
    "ks": MetricDefinition(_ks_segments, ordered=True),
}


@dataclass(frozen=True)
class FeatureDrift:
    """One column of one window against the baseline: each metric's value (None where the
    metric does not apply) and the status they set."""

    kind: Kind
    values: Mapping[Metric, float | None]
    status: Status

    def metric(self, name: Metric) -> float | None:
        return self.values.get(name)


@dataclass(frozen=True)
class WindowReport:
    """A window's verdict: its counts, each column against the baseline, and the worst status."""

    window: WindowCounts
    features: Mapping[str, FeatureDrift]
    status: Status


def judge(values: Mapping[Metric, float | None], cuts: Mapping[Metric, Thresholds]) -> tuple[Status, Metric | None]:
    """The status the cuts give these values, and the metric that set it (None when ok)."""
    status: Status = "ok"
    by: Metric | None = None
    for metric, cut in cuts.items():
        value = values.get(metric)
        if value is None:
            continue
        if value >= cut.alert:
            return "alert", metric
        if value >= cut.warn and status == "ok":
            status, by = "warn", metric
    return status, by


def evaluate(window: WindowCounts, baseline: Baseline, settings: DriftSettings) -> WindowReport:
    """Every baseline column of `window` against the baseline, judged by `settings`."""
    judged = window.events >= settings.min_events
    names = list(baseline.features)
    bases = list(baseline.features.values())
    lives = []
    for name, base in zip(names, bases, strict=True):
        live = window.features.get(name)
        if live is None or len(live.counts) != len(base.counts):
            raise ValueError(
                f"window [{window.start_ms}, {window.end_ms}) of model {window.model_version}: column {name!r} "
                f"is {'absent' if live is None else f'binned in {len(live.counts)} bins'}, the baseline has "
                f"{len(base.counts)} bins; evaluate windows against their model version's baseline"
            )
        lives.append(live)
    features: dict[str, FeatureDrift] = {}
    if names:
        segments = Segments.of(bases, lives)
        columns = {metric: d.every_column(segments).tolist() for metric, d in METRICS.items()}
        for i, (name, base, live) in enumerate(zip(names, bases, lives, strict=True)):
            ordered = base.kind == "numeric" and sum(base.counts) > 0 and sum(live.counts) > 0
            values: dict[Metric, float | None] = {
                metric: None if d.ordered and not ordered else columns[metric][i] for metric, d in METRICS.items()
            }
            drift = FeatureDrift(base.kind, values, "insufficient")
            if judged:
                drift = replace(drift, status=judge(values, settings.thresholds(name, base.kind))[0])
            features[name] = drift
    worst: Status = max((f.status for f in features.values()), key=SEVERITY.__getitem__, default="ok")
    return WindowReport(window, features, worst if judged else "insufficient")


def sampling_noise(
    baseline: Baseline, events: int, draws: int = 200, quantile: float = 0.95, seed: int = 0
) -> dict[str, dict[Metric, float]]:
    """How far each metric moves by sampling alone at `events` per window: its `quantile` over
    `draws` windows drawn from the baseline's own shares (a parametric bootstrap). A value inside
    this band is indistinguishable from an unchanged stream; seeded, so a report is reproducible."""
    rng = np.random.default_rng(seed)
    bases = list(baseline.features.values())
    shares = [proportions([*b.counts, b.missing]) for b in bases]
    drawn: dict[Metric, list[np.ndarray]] = {metric: [] for metric in METRICS}
    for _ in range(draws):
        samples = [rng.multinomial(events, p) for p in shares]
        segments = Segments.of(bases, [FeatureCounts(tuple(x[:-1].tolist()), int(x[-1])) for x in samples])
        for metric, definition in METRICS.items():
            drawn[metric].append(definition.every_column(segments))
    bands = {metric: np.quantile(np.array(values), quantile, axis=0) for metric, values in drawn.items()}
    return {
        name: {
            metric: float(bands[metric][i])
            for metric, definition in METRICS.items()
            if not (definition.ordered and base.kind != "numeric")
        }
        for i, (name, base) in enumerate(baseline.features.items())
    }
