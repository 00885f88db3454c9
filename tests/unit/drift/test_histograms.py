"""Binning edge cases and the baseline file."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from streamer.drift.histograms import (
    SCORE,
    Baseline,
    bin_categorical,
    bin_numeric,
    categorical_baseline,
    numeric_edges,
)

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
