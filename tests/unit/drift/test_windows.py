"""Tumbling windows per worker, their merge across workers, and the new-value summary."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamer.drift.histograms import (
    SCORE,
    Baseline,
)
from streamer.drift.settings import DriftSettings
from streamer.drift.windows import DriftMonitor, WindowCounts, merge, merge_by_window, top_new_values
from streamer.records import Columns
from tests.unit.drift.conftest import DAY_MS, SETTINGS, N, one_window, payments

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


def test_an_idle_wall_clock_closes_windows_but_leaves_a_backlog_on_time(baseline: Baseline) -> None:
    """A worker waits for its partitions (start-up, a rebalance) while their backlog is an hour
    old: the wait must not make the backlog late."""
    settings = DriftSettings(window_s=60, allowed_lateness_s=10)
    monitor = DriftMonitor(baseline, settings, "w1", 1)
    columns, scores = payments(4, 49)
    now = 1_700_000_000_000 - 1_700_000_000_000 % 60_000 + 30_000
    hour_ago = now - 3_600_000 - 30_000  # a minute boundary

    def at(*offsets_s: float) -> list[WindowCounts]:
        times = np.array([hour_ago + round(o * 1000) for o in offsets_s], dtype=np.int64)
        return monitor.observe({k: v[: len(times)] for k, v in columns.items()}, scores[: len(times)], times)

    assert monitor.close_idle(now) == []  # nothing open yet
    assert at(5, 30) == []
    [first] = monitor.close_idle(now)  # idle again: the open window is long past
    assert (first.start_ms, first.events) == (hour_ago, 2)
    assert at(20, 65) == [] and monitor.late_events == 0  # the same window opens again
    again, second = monitor.flush()
    assert (again.start_ms, again.events, second.start_ms, second.events) == (hour_ago, 1, hour_ago + 60_000, 1)
    assert merge([first, again]).events == 2 + 1  # downstream, the two records of one window add up

    assert at(125) == []
    assert monitor.close_idle(hour_ago + 180_000 + 9_999) == []  # still within the allowed lateness
    assert [w.start_ms for w in monitor.close_idle(hour_ago + 190_000)] == [hour_ago + 120_000]


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
