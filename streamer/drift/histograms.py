"""Fixed-bin histograms: how a column is binned, in training (the baseline) and live alike.

One code path bins training data and live windows (`numeric_edges`, `bin_numeric`,
`bin_categorical`). A numeric column has edges [min, d1 .. d9, max] (training quantiles,
deduplicated) and len(edges) + 1 counts: bin 0 is the underflow (< min), then the inner bins
[e_i, e_i+1), the last one closed on the right so the training maximum falls inside it, then the
overflow (> max). NaN, ±inf and None are `missing`, counted apart. A categorical column has its
top training values and one more count, the OOV slot ("other"); None is missing. The score is a
numeric column whose edges are given (fixed on [0, 1]). Old baselines whose edges are the 9
inner deciles read the same way (their first and last bins become the under/overflow).

    baseline = Baseline.from_dict(json.loads(Path("models/<name>/1/baseline.json").read_text()))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise, repeat
from typing import Any

import numpy as np

from streamer.drift.settings import Kind

SCORE = "score"  # the model score's name among the baseline columns and in windows
BASELINE_FILE = "baseline.json"  # in a model package, beside the SavedModel
SCORE_EDGES = tuple(np.linspace(0.0, 1.0, 21).round(2).tolist())  # 20 fixed score bins on [0, 1]
DRIFT_BINS = 10  # quantile bins of a numeric baseline column (plus under/overflow)
TOP_VALUES = 100  # values kept per categorical baseline column; the rest share the OOV slot
SUMMARY_QUANTILES = (0.05, 0.5, 0.95)
_NONE = np.array(None, dtype=object)


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


@dataclass(frozen=True)
class Summary:
    """`FeatureBaseline.summarize`: present values, missing share, and for numeric columns the
    mean (None without a sum) and SUMMARY_QUANTILES; for categorical ones the share of values outside the vocabulary."""

    count: int
    missing_rate: float
    mean: float | None
    quantiles: tuple[float, ...]
    oov_rate: float | None


@dataclass(frozen=True)
class FeatureBaseline:
    """One column's training histogram: `edges` (numeric) or `values` (categorical), its
    counts (one more than edges / values), the missing count, and for numeric columns the sum of
    the values counted (`total`: an exact mean in reports; None in baselines written before it)."""

    kind: Kind
    counts: tuple[int, ...]
    missing: int = 0
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    total: float | None = None

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

    def summarize(self, counts: Sequence[int], missing: int, total: float | None) -> Summary:
        """A column's figures in its own units, from its bin counts and the sum of its values
        (this baseline's or a window's, so they merge across workers like the counts). Numeric:
        the exact mean, and quantiles interpolated within their bin (off by at most its width); in
        the under- or overflow bin they are -inf / +inf (below the training minimum, above its
        maximum)."""
        c = np.asarray(counts, dtype=np.float64)
        present = int(c.sum())
        rate = missing / (present + missing) if present + missing else 0.0
        if self.kind == "categorical" or not present:
            oov = float(c[-1] / present) if present and self.kind == "categorical" else None
            return Summary(present, rate, None, (), oov)
        e = self._edges
        mean = None if total is None else total / present
        cumulative = np.cumsum(c) / present
        quantiles = []
        for q in SUMMARY_QUANTILES:
            i = int(np.searchsorted(cumulative, q, side="left"))
            if i == 0:
                quantiles.append(-np.inf)
            elif i >= len(c) - 1:
                quantiles.append(np.inf)
            else:  # inner bin i spans edges[i - 1] .. edges[i]
                below = cumulative[i - 1]
                share = (q - below) / (cumulative[i] - below) if cumulative[i] > below else 0.0
                quantiles.append(float(e[i - 1] + share * (e[i] - e[i - 1])))
        return Summary(present, rate, mean, tuple(quantiles), None)

    def to_dict(self) -> dict[str, Any]:
        bins: dict[str, Any] = {"edges": list(self.edges)} if self.kind == "numeric" else {"values": list(self.values)}
        total = {} if self.total is None else {"sum": self.total}
        return {"kind": self.kind, **bins, "counts": list(self.counts), "missing": self.missing, **total}

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> FeatureBaseline:
        return cls(
            kind=tree["kind"],
            counts=tuple(int(c) for c in tree["counts"]),
            missing=int(tree.get("missing", 0)),
            edges=tuple(float(e) for e in tree.get("edges", ())),
            values=tuple(str(v) for v in tree.get("values", ())),
            total=None if tree.get("sum") is None else float(tree["sum"]),
        )


def numeric_baseline(
    values: np.ndarray, edges: Sequence[float] | None = None, bins: int = DRIFT_BINS
) -> FeatureBaseline:
    """A numeric column's baseline from an in-memory sample: quantile edges unless given (the score)."""
    chosen = numeric_edges(values, bins) if edges is None else [float(e) for e in edges]
    counts, missing = bin_numeric(values, chosen)
    x = np.asarray(values, dtype=np.float64)
    total = float(x[np.isfinite(x)].sum())
    return FeatureBaseline("numeric", tuple(counts.tolist()), missing, edges=tuple(chosen), total=total)


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
