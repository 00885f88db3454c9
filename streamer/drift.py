"""Drift statistics: does live traffic still look like the training data?

The pure part, with no Kafka in it: fixed-bin histograms of every baseline column and of the
model score per tumbling window, the metrics that compare a window with the baseline, the
drift-topic record (`schemas/drift_report.avsc`) and the analyst's HTML report.

    baseline = Baseline.from_dict(json.loads(Path("models/fraud/1/baseline.json").read_text()))
    monitor = DriftMonitor(baseline, settings.drift, worker_id, model_version)
    for window in monitor.observe(columns, scores, columns["event_time"]):   # per micro-batch
        produce(to_avro_record(evaluate(window, baseline, settings.drift)))
    ...
    windows = merge_by_window([from_avro_record(r).window for r in drift_topic])   # the group's view
    reports = [evaluate(w, baseline, settings.drift) for w in windows]
    render_report(reports, baseline, Path("report.html"), settings.drift)

Bins. One code path bins training data and live windows (`numeric_edges`, `bin_numeric`,
`bin_categorical`). A numeric column has edges [min, d1 .. d9, max] (training quantiles,
deduplicated) and len(edges) + 1 counts: bin 0 is the underflow (< min), then the inner bins
[e_i, e_i+1), the last one closed on the right so the training maximum falls inside it, then the
overflow (> max). NaN, ±inf and None are `missing`, counted apart. A categorical column has its
top training values and one more count, the OOV slot ("other"); None is missing. The score is a
numeric column whose edges are given (fixed on [0, 1]). Old baselines whose edges are the 9
inner deciles read the same way (their first and last bins become the under/overflow).

Windows. Tumbling, by event time (aligned to multiples of the window size since the epoch, so the
windows of every worker in the group have the same bounds and `merge` sums them) or by count
(per worker; bounds are the first and last event times seen). An event-time window closes when
the largest event time seen passes its end by `allowed_lateness_s`; later events for it are
dropped and counted in `DriftMonitor.late_events`. Events stamped more than `max_clock_skew_s`
ahead of the wall clock are left out (`DriftMonitor.future_events`): one bad producer clock
must not close every window early. Windows hold raw counts, so windows of N workers merge into
exactly the counts one worker seeing every event would have.

Metrics, per column, of the live window q against the baseline p (both normalized; the missing
count is one more bin, so a column that starts arriving empty is drift):

- PSI = sum (q - p) ln(q / p). An empty bin takes the proportion PSI_EPSILON = 1e-4 (Evidently's
  convention), so a new category in 5% of events adds 0.05 ln(0.05 / 1e-4) = 0.31, not infinity.
- Jensen-Shannon distance, base 2 (scipy.spatial.distance.jensenshannon(p, q, base=2)): in [0, 1].
- L-infinity: max |q - p| over bins (TFDV's categorical drift metric).
- binned KS: max |Q - P| of the cumulative histograms, numeric columns only (bins are ordered;
  missing left out). It is the two-sample KS statistic evaluated at the bin edges.

Status. A metric at or above its `alert` threshold makes the column `alert`, else at or above
`warn` makes it `warn`, else `ok`; the window takes its worst column. A window with fewer than
`min_events` events is `insufficient` (its metrics are still reported). Defaults, per kind as
TFDV and Vertex AI monitoring do (Jensen-Shannon for numeric, L-infinity for categorical):

| metric      | numeric      | categorical  | source                                                  |
|-------------|--------------|--------------|---------------------------------------------------------|
| psi         | 0.10 / 0.25  | 0.10 / 0.25  | the credit-scoring rule of thumb (Siddiqi); Evidently   |
| js_distance | 0.05 / 0.10  | reported     | Evidently: JS distance, drift at 0.1                    |
| linf        | reported     | 0.05 / 0.10  | TFDV infinity_norm; cut set for window-sized samples    |
| ks          | reported     | n/a          | no fixed cut: its null spread shrinks as 1/sqrt(n)      |

`min_events` = 5000 is the sample size these cuts are made for. Measured on the demo payments
(10 quantile bins, vocabularies up to 100 values, 200 fresh samples of an unchanged
distribution at 5000 events), the largest values were PSI 0.015, L-infinity 0.022 (categorical)
and JS distance 0.032 (numeric): under every `warn` cut with a margin. At 2000 events the JS
distance already reached 0.051. A mean shift of 0.5 standard deviation gives JS distance ~0.2 and
PSI ~0.24; a new category in 10% of events PSI ~0.7 and L-infinity ~0.1: both alert in one
window. JS distance does not judge categorical columns: with many rare values (a merchant id) it
sits at ~0.08 on unchanged data, from sampling alone. The 0.01 / 0.02 cuts of TFDV and Vertex AI
examples are meant for comparing large datasets: at a few thousand events per window sampling
noise alone crosses them. With smaller windows, raise the cuts. Per-column overrides go under
`features:`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from itertools import pairwise, repeat
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamer.records import now_ms

Kind = Literal["numeric", "categorical"]
WindowKind = Literal["event_time", "count"]
Status = Literal["ok", "warn", "alert", "insufficient"]
Metric = Literal["psi", "js_distance", "linf", "ks"]

SCORE = "score"  # the model score's name among the baseline columns and in windows
SCORE_EDGES = tuple(np.linspace(0.0, 1.0, 21).round(2).tolist())  # 20 fixed score bins on [0, 1]
DRIFT_BINS = 10  # quantile bins of a numeric baseline column (plus under/overflow)
TOP_VALUES = 100  # values kept per categorical baseline column; the rest share the OOV slot
PSI_EPSILON = 1e-4  # proportion an empty bin takes in PSI, so ln(q / p) stays finite
WORST_FEATURES = 4  # baseline-against-live histograms in a report
_NONE = np.array(None, dtype=object)
_SEVERITY: dict[Status, int] = {"insufficient": -1, "ok": 0, "warn": 1, "alert": 2}


# --- settings -----------------------------------------------------------------------------------


class Thresholds(BaseModel):
    """Two cuts on one metric; a value at or above a cut takes its status."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    warn: float = Field(ge=0, description="At or above: status 'warn'.")
    alert: float = Field(ge=0, description="At or above: status 'alert'.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warn > self.alert:
            raise ValueError(f"warn {self.warn} > alert {self.alert}")
        return self


class FeatureThresholds(BaseModel):
    """Cuts per metric; a metric without cuts (null) is reported but does not set the status."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    psi: Thresholds | None = Field(None, description="Population stability index.")
    js_distance: Thresholds | None = Field(None, description="Jensen-Shannon distance, base 2, in [0, 1].")
    linf: Thresholds | None = Field(None, description="L-infinity: largest change of one bin's share.")
    ks: Thresholds | None = Field(None, description="Binned KS statistic; numeric columns only.")


class DriftSettings(BaseModel):
    """The `drift:` section: windows, the sample size metrics need, and the cuts on them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = Field(True, description="Count drift windows; off, the worker skips the tap entirely.")
    tensorboard_dir: Path | None = Field(None, description="Also write each window's metrics as TensorBoard scalars.")
    window: WindowKind = Field("event_time", description="Tumbling windows by event time, or every N events.")
    window_s: float = Field(300.0, ge=0.001, description="event_time: window length; windows align to the epoch.")
    window_events: int = Field(10_000, ge=1, description="count: events per window (per worker).")
    allowed_lateness_s: float = Field(60.0, ge=0, description="event_time: a window closes this long after its end.")
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="event_time: events stamped further ahead of the wall clock are left out."
    )
    min_events: int = Field(5000, ge=1, description="Windows with fewer events are 'insufficient', not judged.")
    numeric: FeatureThresholds = Field(
        FeatureThresholds(psi=Thresholds(warn=0.1, alert=0.25), js_distance=Thresholds(warn=0.05, alert=0.1)),
        description="Cuts for numeric columns and the score.",
    )
    categorical: FeatureThresholds = Field(
        FeatureThresholds(psi=Thresholds(warn=0.1, alert=0.25), linf=Thresholds(warn=0.05, alert=0.1)),
        description="Cuts for categorical columns (ks does not apply).",
    )
    features: dict[str, FeatureThresholds] = Field(
        default_factory=dict, description="Per-column overrides; only the metrics given replace the kind's."
    )

    @model_validator(mode="after")
    def _judgeable(self) -> DriftSettings:
        if self.window == "count" and self.window_events < self.min_events:
            raise ValueError(
                f"window_events {self.window_events} < min_events {self.min_events}: every window would be "
                "'insufficient'"
            )
        return self

    def thresholds(self, name: str, kind: Kind) -> dict[Metric, Thresholds]:
        """The cuts that judge column `name`: its kind's, with the metrics its override sets replaced."""
        base = self.numeric if kind == "numeric" else self.categorical
        override = self.features.get(name)
        cuts: dict[Metric, Thresholds] = {}
        for metric in get_args(Metric):
            source = override if override is not None and metric in override.model_fields_set else base
            value = getattr(source, metric)
            if value is not None and not (metric == "ks" and kind == "categorical"):
                cuts[metric] = value
        return cuts


# --- binning ------------------------------------------------------------------------------------


def numeric_edges(sample: np.ndarray, bins: int = DRIFT_BINS) -> list[float]:
    """Quantile edges [min, q_1/bins, ..., max] of the finite values, deduplicated (ties in
    discrete data merge bins). A constant sample gives [v, v]: one closed bin holding v."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, not {bins}")
    x = np.asarray(sample, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        raise ValueError("no finite values to take edges from")
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)))
    return np.repeat(edges, 2).tolist() if len(edges) == 1 else edges.tolist()


def _check_edges(edges: np.ndarray) -> None:
    if len(edges) < 2 or not np.all(np.isfinite(edges)):
        raise ValueError(f"numeric edges need at least 2 finite values (min and max), got {edges.tolist()}")
    if not (np.all(np.diff(edges) > 0) or (len(edges) == 2 and edges[0] == edges[1])):
        raise ValueError(f"numeric edges must be strictly increasing, got {edges.tolist()}")


def _numeric_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: 0 underflow, 1 .. k-1 inner, k overflow, k+1 missing (k = len(edges))."""
    x = np.asarray(values, dtype=np.float64)  # None in an object array becomes NaN
    k = len(edges)
    index = np.searchsorted(edges, x, side="right")
    index[x == edges[-1]] = k - 1  # the last inner bin is closed: the training max falls inside
    index[~np.isfinite(x)] = k + 1
    return index


def _present(values: np.ndarray) -> np.ndarray:
    """Which values are not None (only object arrays can hold None)."""
    if values.dtype == object:
        return np.asarray(np.not_equal(values, _NONE), dtype=bool)
    return np.ones(len(values), dtype=bool)


def _vocabulary_slots(vocabulary: Sequence[str]) -> dict[object, int]:
    """Value → slot: its position in the vocabulary, None → len + 1 (missing); others are OOV (len)."""
    slots: dict[object, int] = {str(word): i for i, word in enumerate(vocabulary)}
    if len(slots) != len(vocabulary):
        raise ValueError("categorical values must be unique")
    slots[None] = len(vocabulary) + 1
    return slots


def _categorical_index(values: np.ndarray, slots: Mapping[object, int]) -> np.ndarray:
    """Slot of each value: 0 .. k-1 its vocabulary position, k OOV, k+1 missing (None).

    One dict lookup per value, iterated in C (`map` of a builtin over a list: no Python bytecode
    per event); a binary search over numpy unicode arrays measured twice as slow, because it first
    copies every string. Non-strings (ints, a nullable long column) compare as `str(value)`, as
    analyze stores them; a column is assumed to hold one type besides None."""
    v = np.asarray(values)
    oov = len(slots) - 1
    items = v.tolist() if v.dtype == object else v.astype(str).tolist()
    index = np.fromiter(map(slots.get, items, repeat(oov)), dtype=np.intp, count=len(items))
    misses = np.flatnonzero(index == oov)
    if len(misses) and not isinstance(items[misses[0]], str):
        text = v[misses].astype(str).tolist()
        index[misses] = np.fromiter(map(slots.get, text, repeat(oov)), dtype=np.intp, count=len(text))
    return index


def bin_numeric(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    """(len(edges) + 1 counts: underflow, inner bins, overflow; missing: NaN, ±inf, None)."""
    e = np.asarray(edges, dtype=np.float64)
    _check_edges(e)
    counts = np.bincount(_numeric_index(values, e), minlength=len(e) + 2)
    return counts[:-1], int(counts[-1])


def bin_categorical(values: np.ndarray, vocabulary: Sequence[str]) -> tuple[np.ndarray, int]:
    """(len(vocabulary) + 1 counts, the last one OOV; missing: None)."""
    counts = np.bincount(_categorical_index(values, _vocabulary_slots(vocabulary)), minlength=len(vocabulary) + 2)
    return counts[:-1], int(counts[-1])


# --- baseline -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureBaseline:
    """One column's training histogram: `edges` (numeric) or `values` (categorical), its
    counts (one more than edges / values) and the missing count."""

    kind: Kind
    counts: tuple[int, ...]
    missing: int = 0
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "numeric":
            _check_edges(np.asarray(self.edges, dtype=np.float64))
            slots = len(self.edges) + 1
        elif self.kind == "categorical":
            if not self.values:
                raise ValueError("a categorical baseline needs at least one value")
            _vocabulary_slots(self.values)
            slots = len(self.values) + 1
        else:
            raise ValueError(f"kind must be numeric or categorical, not {self.kind!r}")
        if len(self.counts) != slots:
            raise ValueError(f"{self.kind} baseline needs {slots} counts, got {len(self.counts)}")
        if min(self.counts) < 0 or self.missing < 0:
            raise ValueError("counts must be >= 0")

    @cached_property
    def _edges(self) -> np.ndarray:
        return np.asarray(self.edges, dtype=np.float64)

    @cached_property
    def _slots(self) -> dict[object, int]:
        return _vocabulary_slots(self.values)

    @property
    def slots(self) -> int:
        """Bins plus the missing slot: the width of one window row."""
        return len(self.counts) + 1

    def index(self, values: np.ndarray) -> np.ndarray:
        """Slot of each value in this column's bins; `slots - 1` is missing."""
        return (
            _numeric_index(values, self._edges) if self.kind == "numeric" else _categorical_index(values, self._slots)
        )

    def labels(self) -> list[str]:
        """A name per bin, for plots."""
        if self.kind == "categorical":
            return [*self.values, "OOV"]
        e = [f"{x:.4g}" for x in self.edges]
        inner = [f"[{a}, {b})" for a, b in pairwise(e)]
        if inner:
            inner[-1] = inner[-1][:-1] + "]"
        return [f"<{e[0]}", *inner, f">{e[-1]}"]

    def to_dict(self) -> dict[str, Any]:
        bins: dict[str, Any] = {"edges": list(self.edges)} if self.kind == "numeric" else {"values": list(self.values)}
        return {"kind": self.kind, **bins, "counts": list(self.counts), "missing": self.missing}

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> FeatureBaseline:
        return cls(
            kind=tree["kind"],
            counts=tuple(int(c) for c in tree["counts"]),
            missing=int(tree.get("missing", 0)),
            edges=tuple(float(e) for e in tree.get("edges", ())),
            values=tuple(str(v) for v in tree.get("values", ())),
        )


def numeric_baseline(
    values: np.ndarray, edges: Sequence[float] | None = None, bins: int = DRIFT_BINS
) -> FeatureBaseline:
    """A numeric column's baseline from an in-memory sample: quantile edges unless given (the score)."""
    chosen = numeric_edges(values, bins) if edges is None else [float(e) for e in edges]
    counts, missing = bin_numeric(values, chosen)
    return FeatureBaseline("numeric", tuple(counts.tolist()), missing, edges=tuple(chosen))


def categorical_baseline(values: np.ndarray, top_k: int = TOP_VALUES) -> FeatureBaseline:
    """A categorical column's baseline: its top_k values (ties by value, as analyze ranks them)."""
    v = np.asarray(values)
    present = v[_present(v)]
    words, counts = np.unique(present.astype(str), return_counts=True)
    vocabulary = words[np.lexsort((words, -counts))[:top_k]].tolist()
    binned, missing = bin_categorical(values, vocabulary)
    return FeatureBaseline("categorical", tuple(binned.tolist()), missing, values=tuple(vocabulary))


@dataclass(frozen=True)
class Baseline:
    """Training histograms per column, the score's under the name SCORE."""

    features: Mapping[str, FeatureBaseline]

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> Baseline:
        """baseline.json: {"features": {column: histogram}, "score": histogram (optional)}."""
        items = dict(tree.get("features", {}))
        if "score" in tree:
            if SCORE in items:
                raise ValueError(f"baseline: a column is named {SCORE!r}, like the score histogram; rename it")
            items[SCORE] = tree["score"]
        features: dict[str, FeatureBaseline] = {}
        for name, item in items.items():
            try:
                features[name] = FeatureBaseline.from_dict(item)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"baseline column {name!r}: {exc}") from exc
        return cls(features)

    def to_dict(self) -> dict[str, Any]:
        tree: dict[str, Any] = {"features": {n: f.to_dict() for n, f in self.features.items() if n != SCORE}}
        if SCORE in self.features:
            tree["score"] = self.features[SCORE].to_dict()
        return tree


# --- windows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureCounts:
    """One column's counts in a window, laid out like its baseline's; missing apart."""

    counts: tuple[int, ...]
    missing: int


@dataclass(frozen=True)
class WindowCounts:
    """Raw counts of one window: what workers emit, and what sums across workers."""

    kind: WindowKind
    start_ms: int
    end_ms: int  # exclusive
    worker_ids: tuple[str, ...]
    model_version: int
    events: int
    features: Mapping[str, FeatureCounts]


def _bounds(w: WindowCounts) -> tuple[int, int, int, str]:
    """What windows that merge share: bounds, model version and window kind (in time order)."""
    return w.start_ms, w.end_ms, w.model_version, w.kind


def merge(windows: Sequence[WindowCounts]) -> WindowCounts:
    """One window from windows of the same bounds and model version (e.g. one per worker):
    counts add up, so the result equals what one worker seeing all those events would count."""
    if not windows:
        raise ValueError("nothing to merge")
    first = windows[0]
    widths = {n: len(c.counts) for n, c in first.features.items()}
    for w in windows[1:]:
        if _bounds(w) != _bounds(first):
            raise ValueError(
                f"cannot merge window {w.kind} [{w.start_ms}, {w.end_ms}) of model {w.model_version} into "
                f"{first.kind} [{first.start_ms}, {first.end_ms}) of model {first.model_version}"
            )
        if {n: len(c.counts) for n, c in w.features.items()} != widths:
            raise ValueError(f"window [{w.start_ms}, {w.end_ms}): workers binned different columns or bins")
    features = {
        name: FeatureCounts(
            tuple(np.sum([w.features[name].counts for w in windows], axis=0).tolist()),
            sum(w.features[name].missing for w in windows),
        )
        for name in first.features
    }
    workers = tuple(sorted({i for w in windows for i in w.worker_ids}))
    return WindowCounts(
        first.kind, first.start_ms, first.end_ms, workers, first.model_version, sum(w.events for w in windows), features
    )


def merge_by_window(windows: Iterable[WindowCounts]) -> list[WindowCounts]:
    """The group's view: windows with the same bounds and model version merged, in time order."""
    groups: dict[tuple[int, int, int, str], list[WindowCounts]] = {}
    for w in windows:
        groups.setdefault(_bounds(w), []).append(w)
    return [merge(groups[key]) for key in sorted(groups)]


@dataclass
class _OpenWindow:
    counts: list[np.ndarray]  # per baseline column, `slots` wide (the last slot is missing)
    events: int = 0
    first_ms: int = np.iinfo(np.int64).max
    last_ms: int = np.iinfo(np.int64).min


class DriftMonitor:
    """Counts one worker's events into tumbling windows; hands back the windows that close.

    Per batch it bins every column once with numpy and adds the bins of all the batch's windows
    with one `bincount` per column, so its cost does not grow with Python-level work per event.
    """

    def __init__(
        self,
        baseline: Baseline,
        settings: DriftSettings,
        worker_id: str,
        model_version: int,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.baseline = baseline
        self.settings = settings
        self.worker_id = worker_id
        self.model_version = model_version
        self._clock = clock  # wall-clock ms, for the clock-skew guard
        self._columns = list(baseline.features.items())
        self._window_ms = max(1, round(settings.window_s * 1000))
        self._lateness_ms = round(settings.allowed_lateness_s * 1000)
        self._skew_ms = round(settings.max_clock_skew_s * 1000)
        self._open: dict[int, _OpenWindow] = {}  # window number (since the epoch, or since start) → counts
        self._closed_before: int | None = None  # event_time: windows numbered below this are closed
        self._watermark = np.iinfo(np.int64).min
        self._assigned = 0  # count: events given a window so far
        self.late_events = 0  # event_time: events of windows already closed, left out
        self.future_events = 0  # event_time: events too far ahead of the wall clock, left out

    def observe(
        self, columns: Mapping[str, np.ndarray], scores: np.ndarray, event_time_ms: np.ndarray
    ) -> list[WindowCounts]:
        """Count one batch (raw columns, scores, event times in ms); return the windows it closed."""
        times = np.asarray(event_time_ms, dtype=np.int64)
        absent = [name for name, _ in self._columns if name != SCORE and name not in columns]
        if absent:
            raise ValueError(f"drift: the batch has no column {absent}; pass every raw column the baseline names")
        if not len(times):
            return []
        if self.settings.window == "event_time":
            numbers = times // self._window_ms
            keep = times <= self._clock() + self._skew_ms
            self.future_events += int(len(times) - np.count_nonzero(keep))
            if self._closed_before is not None:
                on_time = numbers >= self._closed_before
                self.late_events += int(np.count_nonzero(keep & ~on_time))
                keep &= on_time
            rows: np.ndarray | None = None if keep.all() else np.flatnonzero(keep)
        else:
            numbers = (self._assigned + np.arange(len(times))) // self.settings.window_events
            self._assigned += len(times)
            rows = None
        if rows is not None:
            numbers, times = numbers[rows], times[rows]
            if not len(times):
                return []
        self._count(columns, scores, times, numbers, rows)
        if self.settings.window == "event_time":
            return self.advance(int(times.max()))
        full = [n for n, w in self._open.items() if w.events >= self.settings.window_events]
        return [self._close(n) for n in sorted(full)]

    def _count(
        self,
        columns: Mapping[str, np.ndarray],
        scores: np.ndarray,
        times: np.ndarray,
        numbers: np.ndarray,
        rows: np.ndarray | None,
    ) -> None:
        windows, which = np.unique(numbers, return_inverse=True)
        opened = [self._open.setdefault(int(n), self._new_window()) for n in windows]
        for i, (name, baseline) in enumerate(self._columns):
            slots = baseline.index(scores if name == SCORE else columns[name])
            if rows is not None:
                slots = slots[rows]
            width = baseline.slots
            added = np.bincount(which * width + slots, minlength=len(windows) * width).reshape(len(windows), width)
            for window, row in zip(opened, added, strict=True):
                window.counts[i] += row
        events = np.bincount(which, minlength=len(windows))
        if self.settings.window == "count":
            first = np.full(len(windows), np.iinfo(np.int64).max)
            last = np.full(len(windows), np.iinfo(np.int64).min)
            np.minimum.at(first, which, times)
            np.maximum.at(last, which, times)
        for j, window in enumerate(opened):
            window.events += int(events[j])
            if self.settings.window == "count":
                window.first_ms = min(window.first_ms, int(first[j]))
                window.last_ms = max(window.last_ms, int(last[j]))

    def _new_window(self) -> _OpenWindow:
        return _OpenWindow([np.zeros(b.slots, dtype=np.int64) for _, b in self._columns])

    def advance(self, watermark_ms: int) -> list[WindowCounts]:
        """event_time: event time has reached `watermark_ms`; close the windows it passed by the
        allowed lateness. `observe` calls it; call it with the wall clock when input is idle, so
        the last windows are not held back until the next event."""
        if self.settings.window != "event_time":
            return []
        self._watermark = max(self._watermark, watermark_ms)
        closed_before = (self._watermark - self._lateness_ms) // self._window_ms
        if self._closed_before is None or closed_before > self._closed_before:
            self._closed_before = closed_before
        return [self._close(n) for n in sorted(self._open) if n < self._closed_before]

    def flush(self) -> list[WindowCounts]:
        """Every open window, complete or not (shutdown, revoke). Another worker may go on to count
        the same event-time window: the two merge downstream."""
        if self.settings.window == "count":  # later events start a new window
            self._assigned = -(-self._assigned // self.settings.window_events) * self.settings.window_events
        return [self._close(n) for n in sorted(self._open)]

    def _close(self, number: int) -> WindowCounts:
        window = self._open.pop(number)
        if self.settings.window == "event_time":
            start, end = number * self._window_ms, (number + 1) * self._window_ms
        else:
            start, end = window.first_ms, window.last_ms + 1
        features = {
            name: FeatureCounts(tuple(counts[:-1].tolist()), int(counts[-1]))
            for (name, _), counts in zip(self._columns, window.counts, strict=True)
        }
        return WindowCounts(
            self.settings.window, start, end, (self.worker_id,), self.model_version, window.events, features
        )


# --- metrics ------------------------------------------------------------------------------------


def _proportions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if c.ndim != 1 or total <= 0 or np.any(c < 0):
        raise ValueError("a histogram needs non-negative counts with a positive total")
    return c / total


def _pair(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p, q = _proportions(expected), _proportions(actual)
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
class FeatureDrift:
    """One column of one window against the baseline. `ks` is None for categorical columns and
    when either side has no non-missing value."""

    kind: Kind
    psi: float
    js_distance: float
    linf: float
    ks: float | None
    status: Status

    def metric(self, name: Metric) -> float | None:
        """A metric by name, for code that loops over the metrics a setting names."""
        value: float | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class WindowReport:
    """A window's verdict: its counts, each column against the baseline, and the worst status."""

    window: WindowCounts
    features: Mapping[str, FeatureDrift]
    status: Status


def _judge(drift: FeatureDrift, cuts: Mapping[Metric, Thresholds]) -> Status:
    status: Status = "ok"
    for metric, cut in cuts.items():
        value = drift.metric(metric)
        if value is None:
            continue
        if value >= cut.alert:
            return "alert"
        if value >= cut.warn:
            status = "warn"
    return status


def _metrics_per_column(
    expected: Sequence[FeatureBaseline], actual: Sequence[FeatureCounts]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PSI, JS distance, L-infinity and binned KS of every column at once: the columns' bins laid
    end to end, each metric one segmented numpy reduction. Equal to `psi`, `js_distance`, `linf`
    and `binned_ks` per column; a replayed backlog closes a window every few hundred events, so
    per-column numpy calls would cost the hot path more than the counting does."""
    widths = np.array([len(b.counts) + 1 for b in expected])  # bins, then the missing slot
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    segment = np.repeat(np.arange(len(widths)), widths)
    e = np.concatenate([[*b.counts, b.missing] for b in expected]).astype(np.float64)
    a = np.concatenate([[*c.counts, c.missing] for c in actual]).astype(np.float64)
    e_total, a_total = np.add.reduceat(e, starts), np.add.reduceat(a, starts)
    if np.any(e_total <= 0) or np.any(a_total <= 0) or np.any(e < 0) or np.any(a < 0):
        raise ValueError("a histogram needs non-negative counts with a positive total")
    p, q = e / e_total[segment], a / a_total[segment]
    p_eps, q_eps = np.where(p > 0, p, PSI_EPSILON), np.where(q > 0, q, PSI_EPSILON)
    psi_values = np.add.reduceat((q_eps - p_eps) * np.log(q_eps / p_eps), starts)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    js_values = np.sqrt(np.maximum(np.add.reduceat(terms, starts) / 2, 0.0))
    linf_values = np.maximum.reduceat(np.abs(q - p), starts)
    is_missing = np.zeros(len(e), dtype=bool)
    is_missing[starts + widths - 1] = True
    e_bins, a_bins = np.where(is_missing, 0.0, e), np.where(is_missing, 0.0, a)
    # A column without a binned value (all missing) gets shares of 0, not 0/0: the running sums
    # below cross columns, and one NaN there would spread to every later column. Its KS is
    # reported as None by `evaluate`.
    e_binned, a_binned = np.add.reduceat(e_bins, starts)[segment], np.add.reduceat(a_bins, starts)[segment]
    p_bins = np.divide(e_bins, e_binned, out=np.zeros_like(e_bins), where=e_binned > 0)
    q_bins = np.divide(a_bins, a_binned, out=np.zeros_like(a_bins), where=a_binned > 0)

    def within_segments(x: np.ndarray) -> np.ndarray:
        total = np.cumsum(x)
        return total - np.concatenate([[0.0], total[starts[1:] - 1]])[segment]

    ks_values = np.maximum.reduceat(np.abs(within_segments(q_bins) - within_segments(p_bins)), starts)
    return psi_values, js_values, linf_values, ks_values


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
        metrics = zip(*(m.tolist() for m in _metrics_per_column(bases, lives)), strict=True)
        for name, base, live, (psi_value, js_value, linf_value, ks_value) in zip(
            names, bases, lives, metrics, strict=True
        ):
            ordered = base.kind == "numeric" and sum(base.counts) > 0 and sum(live.counts) > 0
            drift = FeatureDrift(
                base.kind, psi_value, js_value, linf_value, ks_value if ordered else None, "insufficient"
            )
            if judged:
                drift = replace(drift, status=_judge(drift, settings.thresholds(name, base.kind)))
            features[name] = drift
    worst: Status = max((f.status for f in features.values()), key=_SEVERITY.__getitem__, default="ok")
    return WindowReport(window, features, worst if judged else "insufficient")


# --- drift topic records (schemas/drift_report.avsc) --------------------------------------------


def to_avro_record(report: WindowReport) -> dict[str, Any]:
    """A DriftWindow record: the raw counts (so windows merge downstream) with this worker's verdict."""
    w = report.window
    return {
        "window_kind": w.kind,
        "window_start": w.start_ms,
        "window_end": w.end_ms,
        "worker_ids": list(w.worker_ids),
        "model_version": w.model_version,
        "events": w.events,
        "status": report.status,
        "features": [
            {
                "name": name,
                "kind": drift.kind,
                "counts": list(w.features[name].counts),
                "missing": w.features[name].missing,
                "psi": drift.psi,
                "js_distance": drift.js_distance,
                "linf": drift.linf,
                "ks": drift.ks,
                "status": drift.status,
            }
            for name, drift in report.features.items()
        ],
    }


def from_avro_record(record: Mapping[str, Any]) -> WindowReport:
    """The inverse of `to_avro_record`; timestamps are plain ms (logical types stripped)."""
    features = record["features"]
    window = WindowCounts(
        kind=record["window_kind"],
        start_ms=int(record["window_start"]),
        end_ms=int(record["window_end"]),
        worker_ids=tuple(record["worker_ids"]),
        model_version=int(record["model_version"]),
        events=int(record["events"]),
        features={f["name"]: FeatureCounts(tuple(int(c) for c in f["counts"]), int(f["missing"])) for f in features},
    )
    drift = {
        f["name"]: FeatureDrift(f["kind"], f["psi"], f["js_distance"], f["linf"], f["ks"], f["status"])
        for f in features
    }
    return WindowReport(window, drift, record["status"])


# --- analyst report -----------------------------------------------------------------------------

_STATUS_COLOURS: dict[Status, str] = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828", "insufficient": "#757575"}
_METRIC_COLOURS: dict[Metric, str] = {"psi": "#1565c0", "js_distance": "#6a1b9a", "linf": "#00838f", "ks": "#5d4037"}


def _file_name(prefix: str, rank: int, name: str) -> str:
    return f"{prefix}_{rank:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"


def render_report(
    reports: Sequence[WindowReport], baseline: Baseline, out: Path, settings: DriftSettings | None = None
) -> Path:
    """Write the HTML file `out` with its PNGs beside it: each column's status-driving metrics over time
    (one grid), baseline against live shares for the WORST_FEATURES columns of highest PSI in
    the latest window, and a table of the latest verdicts. Pass the group's merged windows,
    evaluated; `settings` gives the cut lines drawn (defaults otherwise)."""
    # Imported here: the worker imports this module on its hot path and never draws.
    from matplotlib.figure import Figure

    if not reports:
        raise ValueError("no drift windows to report on")
    settings = settings or DriftSettings()
    out_dir = out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(reports, key=lambda r: (r.window.start_ms, r.window.end_ms))
    latest = ordered[-1]
    names = list(baseline.features)
    times = np.array([datetime.fromtimestamp(r.window.start_ms / 1000, tz=UTC) for r in ordered])

    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(5 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flat
    for ax in axes[len(names) :]:
        ax.remove()
    for ax, name in zip(axes, names, strict=False):
        kind = baseline.features[name].kind
        cuts: Mapping[Metric, Thresholds | None] = settings.thresholds(name, kind) or {"psi": None}
        judged = np.array([r.features[name].status != "insufficient" for r in ordered])
        for metric, cut in cuts.items():
            colour = _METRIC_COLOURS[metric]
            values = np.array([np.nan if v is None else v for v in (r.features[name].metric(metric) for r in ordered)])
            ax.plot(times, values, color=colour, linewidth=1, label=metric)
            ax.plot(times[judged], values[judged], "o", markersize=3, color=colour)
            ax.plot(times[~judged], values[~judged], "o", markersize=3, color=colour, markerfacecolor="white")
            if cut is not None:
                ax.axhline(cut.alert, color=colour, linestyle="--", linewidth=0.8)
        status = latest.features[name].status
        ax.set_title(f"{name} ({kind}): {status}", color=_STATUS_COLOURS[status])
        ax.legend(fontsize="small", loc="upper left")
        ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    figure.suptitle(f"Drift per window (dashed: alert cuts; hollow: fewer than {settings.min_events} events)")
    trend_file = "metrics_over_time.png"
    figure.savefig(out_dir / trend_file, dpi=100)

    worst = sorted(names, key=lambda n: latest.features[n].psi, reverse=True)[:WORST_FEATURES]
    histogram_files = []
    for rank, name in enumerate(worst, start=1):
        base = baseline.features[name]
        live = latest.window.features[name]
        labels = [*base.labels(), "missing"]
        p = _proportions([*base.counts, base.missing])
        q = _proportions([*live.counts, live.missing])
        shown = np.arange(len(labels))
        if len(shown) > 25:  # long vocabularies: the bins that moved most
            shown = np.sort(np.argsort(-np.abs(q - p))[:25])
        figure = Figure(figsize=(max(6.0, 0.45 * len(shown)), 3.6), layout="constrained")
        ax = figure.subplots()
        x = np.arange(len(shown))
        ax.bar(x - 0.2, p[shown], width=0.4, label="baseline", color="#90a4ae")
        ax.bar(x + 0.2, q[shown], width=0.4, label="live", color=_STATUS_COLOURS[latest.features[name].status])
        ax.set_xticks(x, [labels[i] for i in shown], rotation=45, ha="right", fontsize="small")
        ax.set_ylabel("share of events")
        subset = "" if len(shown) == len(labels) else f", {len(shown)} of {len(labels)} bins that moved most"
        ax.set_title(f"{name}: PSI {latest.features[name].psi:.3f}{subset}")
        ax.legend()
        histogram_files.append(_file_name("histogram", rank, name))
        figure.savefig(out_dir / histogram_files[-1], dpi=100)

    out.write_text(_html(ordered, trend_file, list(zip(worst, histogram_files, strict=True))))
    return out


def _html(ordered: Sequence[WindowReport], trend_file: str, histograms: Sequence[tuple[str, str]]) -> str:
    latest = ordered[-1]
    w = latest.window

    def stamp(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td>{d.kind}</td>"
        f'<td style="color:{_STATUS_COLOURS[d.status]};font-weight:bold">{d.status}</td>'
        f"<td>{number(d.psi)}</td><td>{number(d.js_distance)}</td><td>{number(d.linf)}</td><td>{number(d.ks)}</td></tr>"
        for name, d in sorted(latest.features.items(), key=lambda kv: (-_SEVERITY[kv[1].status], -kv[1].psi))
    )
    figures = "\n".join(
        f'<figure><img src="{html.escape(file)}" alt="{html.escape(name)}"><figcaption>{html.escape(name)}: '
        f"baseline against the latest window</figcaption></figure>"
        for name, file in histograms
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Drift report</h1>
<p>{len(ordered)} windows from {stamp(ordered[0].window.start_ms)} to {stamp(w.end_ms)}.
Latest window: {stamp(w.start_ms)} to {stamp(w.end_ms)}, {w.events} events from {len(w.worker_ids)} worker(s),
model version {w.model_version}, status
<b style="color:{_STATUS_COLOURS[latest.status]}">{latest.status}</b>.</p>
<h2>Latest window</h2>
<table><tr><th>column</th><th>kind</th><th>status</th><th>PSI</th><th>JS distance</th><th>L-inf</th><th>KS</th></tr>
{rows}
</table>
<h2>Metrics over time</h2>
<img src="{html.escape(trend_file)}" alt="drift metrics per window">
<h2>Largest PSI in the latest window</h2>
{figures}
<p><small>Generated {stamp(now_ms())}.</small></p>
</body></html>
"""
