"""Tumbling windows of raw bin counts, per worker, and their merge across workers.

Tumbling, by event time (aligned to multiples of the window size since the epoch, so the
windows of every worker in the group have the same bounds and `merge` sums them) or by count
(per worker; bounds are the first and last event times seen). An event-time window closes when
the largest event time seen passes its end by `allowed_lateness_s`; later events for it are
dropped and counted in `DriftMonitor.late_events`. While input is idle, `close_idle` closes
windows by the wall clock instead, without making later events late. Events stamped more than
`max_clock_skew_s` ahead of the wall clock are left out (`DriftMonitor.future_events`): one bad
producer clock must not close every window early. Windows hold raw counts, so windows of N
workers merge into exactly the counts one worker seeing every event would have.

    monitor = DriftMonitor(baseline, settings.drift, worker_id, model_version)
    for window in monitor.observe(columns, scores, columns["event_time"]):   # per micro-batch
        ...
    windows = merge_by_window(windows_of_every_worker)   # the group's view
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamer.drift.histograms import SCORE, Baseline
from streamer.drift.settings import DriftSettings, WindowKind
from streamer.records import now_ms

NEW_VALUES = 10  # OOV values named per categorical column and window
RARE_OOV = 0.01  # ... for columns whose training data had at most this share outside the vocabulary


def top_new_values(counts: Mapping[str, int], k: int = NEW_VALUES) -> dict[str, int]:
    """A Misra-Gries summary of the values outside a column's vocabulary: at most k values, each
    with a count that undercounts by at most (values seen - sum of counts kept) / (k + 1), so a
    value with more than a (k + 1)-th of the OOV events is always named. Summaries merge (add the
    counts, summarize again) with the same bound (Agarwal et al., Mergeable Summaries, 2012);
    with k or fewer distinct values they are exact."""
    if len(counts) <= k:
        return {v: c for v, c in counts.items() if c > 0}
    cut = sorted(counts.values(), reverse=True)[k]
    return {v: c - cut for v, c in counts.items() if c > cut}


def _ranked(counts: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda vc: (-vc[1], vc[0])))


@dataclass(frozen=True)
class FeatureCounts:
    """One column's counts in a window, laid out like its baseline's; missing apart. `total`:
    the sum of the values counted (numeric columns; 0 for categorical), for an exact mean."""

    counts: tuple[int, ...]
    missing: int
    total: float = 0.0
    new_values: tuple[tuple[str, int], ...] = ()  # categorical: the OOV values seen most, see NewValues


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
            sum(w.features[name].total for w in windows),
            _ranked(top_new_values(_added(w.features[name].new_values for w in windows))),
        )
        for name in first.features
    }
    workers = tuple(sorted({i for w in windows for i in w.worker_ids}))
    return WindowCounts(
        first.kind, first.start_ms, first.end_ms, workers, first.model_version, sum(w.events for w in windows), features
    )


def _added(summaries: Iterable[Iterable[tuple[str, int]]]) -> dict[str, int]:
    added: dict[str, int] = {}
    for summary in summaries:
        for value, count in summary:
            added[value] = added.get(value, 0) + count
    return added


def merge_by_window(windows: Iterable[WindowCounts]) -> list[WindowCounts]:
    """The group's view: windows with the same bounds and model version merged, in time order."""
    groups: dict[tuple[int, int, int, str], list[WindowCounts]] = {}
    for w in windows:
        groups.setdefault(_bounds(w), []).append(w)
    return [merge(groups[key]) for key in sorted(groups)]


@dataclass
class _OpenWindow:
    counts: list[np.ndarray]  # per baseline column, `slots` wide (the last slot is missing)
    totals: list[float]  # per baseline column: the sum of its finite values (numeric)
    new_values: list[dict[str, int]]  # per baseline column: top_new_values of its OOV values
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
        # Columns whose training values (nearly) all fit the vocabulary: an OOV value there is news,
        # worth naming. In a long tail (shop ids) it is the usual, and naming costs a sort per batch.
        self._named = {
            i
            for i, (_, b) in enumerate(self._columns)
            if b.kind == "categorical" and b.counts[-1] <= RARE_OOV * max(sum(b.counts), 1)
        }
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
            return self._advance(int(times.max()))
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
            values = scores if name == SCORE else columns[name]
            slots = baseline.index(values)
            if rows is not None:
                slots, values = slots[rows], values[rows]
            width = baseline.slots
            added = np.bincount(which * width + slots, minlength=len(windows) * width).reshape(len(windows), width)
            for window, row in zip(opened, added, strict=True):
                window.counts[i] += row
            # The counts just added say whether a batch has missing or OOV values: most have none,
            # and skip the masks below (they would add a sixth to the cost of counting).
            if baseline.kind == "numeric":
                x = np.asarray(values, dtype=np.float64)
                if added[:, -1].any():  # missing values (NaN, inf, None) add nothing
                    x = np.where(slots < width - 1, x, 0.0)
                totals = [float(x.sum())] if len(opened) == 1 else np.bincount(which, x, len(windows)).tolist()
                for window, total in zip(opened, totals, strict=True):
                    window.totals[i] += total
            elif i in self._named and added[:, -2].any():
                new = np.flatnonzero(slots == width - 2)
                self._name_new_values(i, opened, which[new], np.asarray(values)[new])
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

    def _name_new_values(self, column: int, opened: list[_OpenWindow], which: np.ndarray, values: np.ndarray) -> None:
        for j in np.unique(which).tolist():
            words, counts = np.unique(values[which == j].astype(str), return_counts=True)
            window = opened[j]
            seen = dict(window.new_values[column])
            for word, count in zip(words.tolist(), counts.tolist(), strict=True):
                seen[word] = seen.get(word, 0) + count
            window.new_values[column] = top_new_values(seen)

    def _new_window(self) -> _OpenWindow:
        columns = len(self._columns)
        return _OpenWindow(
            [np.zeros(b.slots, dtype=np.int64) for _, b in self._columns], [0.0] * columns, [{} for _ in range(columns)]
        )

    def _advance(self, watermark_ms: int) -> list[WindowCounts]:
        """event_time: event time has reached `watermark_ms`; close the windows it passed by the
        allowed lateness. Later events of those windows are late."""
        self._watermark = max(self._watermark, watermark_ms)
        closed_before = (self._watermark - self._lateness_ms) // self._window_ms
        if self._closed_before is None or closed_before > self._closed_before:
            self._closed_before = closed_before
        return [self._close(n) for n in sorted(self._open) if n < self._closed_before]

    def close_idle(self, wall_ms: int) -> list[WindowCounts]:
        """event_time, input idle: close the open windows whose end is the allowed lateness behind
        the wall clock, so the last ones are not held back until the next event. The watermark
        stays where event time put it: a backlog this worker has not been given yet (start-up, a
        rebalance) is not late because the worker waited for it. Its events of a window closed
        here open that window again; the two records merge downstream like two workers' counts."""
        if self.settings.window != "event_time":
            return []
        ended_before = (wall_ms - self._lateness_ms) // self._window_ms
        return [self._close(n) for n in sorted(self._open) if n < ended_before]

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
            name: FeatureCounts(tuple(counts[:-1].tolist()), int(counts[-1]), total, _ranked(new))
            for (name, _), counts, total, new in zip(
                self._columns, window.counts, window.totals, window.new_values, strict=True
            )
        }
        return WindowCounts(
            self.settings.window, start, end, (self.worker_id,), self.model_version, window.events, features
        )
