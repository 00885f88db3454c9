"""The quality section of the drift report: the figures an analyst reads, per window and version."""

from __future__ import annotations

import re

import numpy as np

from streamer.quality.report import render_quality
from streamer.quality.windows import QualityAccumulator, evaluate

HOUR_MS = 3_600_000


def test_each_window_and_version_shows_its_figures_and_the_newest_lead() -> None:
    accumulator = QualityAccumulator(3600, 0.5, "c1")
    times = np.array([0, 0, 0, HOUR_MS, HOUR_MS, HOUR_MS])
    versions = np.array([1, 1, 2, 1, 1, 1])
    accumulator.add(times, versions, np.array([0.9, 0.1, 0.8, 0.7, 0.6, 0.2]), np.array([1, 0, 1, 1, 0, 0], bool))
    text = render_quality([evaluate(w) for w in accumulator.take()])
    assert len(re.findall(r"<tr><td class=l>", text)) == 3  # (hour 0, v1), (hour 0, v2), (hour 1, v1)
    headline = re.search(r'id="quality-headline">([^<]*)<', text)
    assert headline is not None
    assert "model v1 (1970-01-01 01:00, 3 labels): precision 0.500, recall 1.000, AUC 1.000" in headline.group(1)
    assert "model v2 (1970-01-01 00:00, 1 labels): precision 1.000, recall 1.000, AUC n/a" in headline.group(1)
    assert "&plusmn; 0.000" in text  # no pair shares a bin: the binned AUC is exact


def test_no_labels_yet_says_so() -> None:
    assert "No labels joined to scores yet" in render_quality([])
