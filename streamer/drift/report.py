"""The analyst's HTML report of evaluated windows, with its PNGs beside it.

    windows = merge_by_window(...)   # the group's view
    render_report([evaluate(w, baseline, settings.drift) for w in windows], baseline, Path("report.html"))

matplotlib is imported when drawing, never by the worker.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamer.drift.histograms import Baseline
from streamer.drift.metrics import WindowReport, proportions
from streamer.drift.settings import SEVERITY, DriftSettings, Metric, Status, Thresholds
from streamer.records import now_ms

WORST_FEATURES = 4  # baseline-against-live histograms in a report
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

    worst = sorted(names, key=lambda n: latest.features[n].metric("psi") or 0.0, reverse=True)[:WORST_FEATURES]
    histogram_files = []
    for rank, name in enumerate(worst, start=1):
        base = baseline.features[name]
        live = latest.window.features[name]
        labels = [*base.labels(), "missing"]
        p = proportions([*base.counts, base.missing])
        q = proportions([*live.counts, live.missing])
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
        ax.set_title(f"{name}: PSI {latest.features[name].metric('psi') or 0.0:.3f}{subset}")
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
        f"<td>{number(d.metric('psi'))}</td><td>{number(d.metric('js_distance'))}</td><td>{number(d.metric('linf'))}</td><td>{number(d.metric('ks'))}</td></tr>"
        for name, d in sorted(
            latest.features.items(), key=lambda kv: (-SEVERITY[kv[1].status], -(kv[1].metric("psi") or 0.0))
        )
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
