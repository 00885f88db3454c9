"""The analyst's HTML report of evaluated windows, with its PNGs beside it.

    windows = merge_by_window(...)   # the group's view
    render_report([evaluate(w, baseline, settings.drift) for w in windows], baseline, Path("report.html"))

The first screen answers "what drifted, since when, by how much": a headline (how many columns
alert), a column x window status grid with the first window each column alerted, and the
latest window's verdicts with the metric and cut that set each status, the sampling-noise band
of that metric at the window's size, and the column's figures in its own units beside the
baseline's. Below: every column's metrics over time (log scale, warn and alert cuts, noise
band) and baseline-against-live shares of the columns that moved most.

matplotlib is imported when drawing, never by the worker; nothing here needs TensorFlow.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamer.drift.histograms import Baseline, FeatureBaseline, Summary
from streamer.drift.metrics import FeatureDrift, WindowReport, judge, proportions, sampling_noise
from streamer.drift.settings import SEVERITY, DriftSettings, Metric, Status, Thresholds
from streamer.records import now_ms

WORST_FEATURES = 4  # baseline-against-live histograms in a report
LOG_FLOOR = 1e-4  # metrics below are drawn at the floor of the log scale
_STATUS_COLOURS: dict[Status, str] = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828", "insufficient": "#9e9e9e"}
# Tableau 10 hues that differ from each other and from the status colours, also in greyscale.
_METRIC_COLOURS: dict[Metric, str] = {"psi": "#1f77b4", "js_distance": "#9467bd", "linf": "#17becf", "ks": "#8c564b"}
_METRIC_NAMES: dict[Metric, str] = {"psi": "PSI", "js_distance": "JS distance", "linf": "L-inf", "ks": "KS"}


def _file_name(prefix: str, rank: int, name: str) -> str:
    return f"{prefix}_{rank:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"


def _stamp(ms: int, short: bool = False) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S UTC")


def _first_alert(ordered: Sequence[WindowReport], name: str) -> WindowReport | None:
    return next((r for r in ordered if r.features[name].status == "alert"), None)


def render_report(
    reports: Sequence[WindowReport],
    baseline: Baseline,
    out: Path,
    settings: DriftSettings | None = None,
    quality: str = "",
) -> Path:
    """Write the HTML file `out` with its PNGs beside it. Pass the group's merged windows,
    evaluated; `settings` gives the cuts (defaults otherwise); `quality`, the HTML section of
    model quality from labels (`streamer.quality.report`), shown after the latest window."""
    if not reports:
        raise ValueError("no drift windows to report on")
    settings = settings or DriftSettings()
    out.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(reports, key=lambda r: (r.window.start_ms, r.window.end_ms))
    events = max(1, int(np.median([r.window.events for r in ordered])))
    noise = sampling_noise(baseline, events)
    trend_file = "metrics_over_time.png"
    _draw_trends(ordered, baseline, settings, noise, out.parent / trend_file)
    latest = ordered[-1]
    worst = sorted(baseline.features, key=lambda n: latest.features[n].metric("psi") or 0.0, reverse=True)
    histograms = [(name, _file_name("histogram", rank, name)) for rank, name in enumerate(worst[:WORST_FEATURES], 1)]
    for name, file in histograms:
        _draw_histogram(name, baseline.features[name], latest, out.parent / file)
    out.write_text(_html(ordered, baseline, settings, noise, events, trend_file, histograms, quality))
    return out


def _draw_trends(
    ordered: Sequence[WindowReport],
    baseline: Baseline,
    settings: DriftSettings,
    noise: Mapping[str, Mapping[Metric, float]],
    path: Path,
) -> None:
    from matplotlib.figure import Figure

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
            raw = [r.features[name].metric(metric) for r in ordered]
            values = np.maximum(np.array([np.nan if v is None else v for v in raw], dtype=np.float64), LOG_FLOOR)
            ax.plot(times, values, color=colour, linewidth=1.2, label=_METRIC_NAMES[metric])
            ax.plot(times[judged], values[judged], "o", markersize=3, color=colour)
            ax.plot(times[~judged], values[~judged], "o", markersize=3, color=colour, markerfacecolor="white")
            if metric in noise[name]:
                ax.axhspan(LOG_FLOOR, max(noise[name][metric], LOG_FLOOR), color=colour, alpha=0.12, linewidth=0)
            if cut is not None:
                ax.axhline(cut.warn, color=colour, linestyle=":", linewidth=1)
                ax.axhline(cut.alert, color=colour, linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_ylim(bottom=LOG_FLOOR)
        status = ordered[-1].features[name].status
        ax.set_title(f"{name} ({kind}): {status}", color=_STATUS_COLOURS[status])
        ax.legend(fontsize="small", loc="upper left")
        ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    figure.suptitle(
        "Drift per window, log scale. Dotted: warn cut; dashed: alert cut; shaded: 95% of sampling noise; "
        f"hollow: fewer than {settings.min_events} events"
    )
    figure.savefig(path, dpi=90)


def _draw_histogram(name: str, base: FeatureBaseline, latest: WindowReport, path: Path) -> None:
    from matplotlib.figure import Figure

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
    figure.savefig(path, dpi=90)


def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if np.isinf(value):
        return "&lt; min" if value < 0 else "&gt; max"
    return f"{value:.{digits}g}"


def _verdict(name: str, drift: FeatureDrift, settings: DriftSettings, noise: Mapping[Metric, float]) -> str:
    """What set the status: the metric, its value, the cut it crossed and its noise band."""
    cuts = settings.thresholds(name, drift.kind)
    if not cuts:
        return ""

    def closeness(metric: Metric) -> float:
        return (drift.metric(metric) or 0.0) / cuts[metric].warn if cuts[metric].warn else 0.0

    # The metric that set the status; when ok (or not judged), the one closest to its warn cut.
    setter = judge(drift.values, cuts)[1]
    by: Metric = setter if setter is not None else max(cuts, key=closeness)
    value, cut = drift.metric(by) or 0.0, cuts[by]
    crossed = (
        f"&ge; {cut.alert:g} alert"
        if value >= cut.alert
        else f"&ge; {cut.warn:g} warn"
        if value >= cut.warn
        else f"&lt; {cut.warn:g} warn"
    )
    return f"{_METRIC_NAMES[by]} {value:.3g} {crossed} (noise &le; {noise.get(by, float('nan')):.2g})"


def _summary_cells(summary: Summary, new_values: Sequence[tuple[str, int]] = ()) -> str:
    if summary.mean is None:
        oov = "" if summary.oov_rate is None else f"{summary.oov_rate:.1%} new"
        if new_values:
            oov += ": " + ", ".join(f"<b>{html.escape(value)}</b> {count}" for value, count in new_values[:5])
        return f"<td>{summary.count}</td><td>{summary.missing_rate:.1%}</td><td class=l colspan=4>{oov}</td>"
    quantiles = "".join(f"<td>{_number(q)}</td>" for q in summary.quantiles)
    return f"<td>{summary.count}</td><td>{summary.missing_rate:.1%}</td><td>{_number(summary.mean)}</td>{quantiles}"


def _grid(ordered: Sequence[WindowReport], names: Sequence[str], settings: DriftSettings) -> str:
    header = "".join(f"<th class=t>{_stamp(r.window.start_ms, short=True)}</th>" for r in ordered)
    rows = []
    for name in names:
        first = _first_alert(ordered, name)
        cells = []
        for r in ordered:
            drift = r.features[name]
            _, by = judge(drift.values, settings.thresholds(name, drift.kind))
            value = drift.metric(by) if by is not None else None
            tip = f"{name} {_stamp(r.window.start_ms)}: {drift.status}" + (
                f", {_METRIC_NAMES[by]} {value:.3g}" if by is not None and value is not None else ""
            )
            text = f"{value:.2g}" if value is not None else ""
            colour = _STATUS_COLOURS[drift.status]
            cells.append(f'<td class=cell style="background:{colour}" title="{html.escape(tip)}">{text}</td>')
        since = _stamp(first.window.start_ms, short=True) if first is not None else ""
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{since}</td>{''.join(cells)}</tr>")
    return f"<table class=grid><tr><th>column</th><th>first alert</th>{header}</tr>\n" + "\n".join(rows) + "</table>"


def _html(
    ordered: Sequence[WindowReport],
    baseline: Baseline,
    settings: DriftSettings,
    noise: Mapping[str, Mapping[Metric, float]],
    events: int,
    trend_file: str,
    histograms: Sequence[tuple[str, str]],
    quality: str,
) -> str:
    latest = ordered[-1]
    w = latest.window
    names = sorted(
        baseline.features,
        key=lambda n: (
            -SEVERITY[latest.features[n].status],
            (first.window.start_ms if (first := _first_alert(ordered, n)) else np.iinfo(np.int64).max),
            -(latest.features[n].metric("psi") or 0.0),
        ),
    )
    alerting = [n for n in names if latest.features[n].status == "alert"]
    ever = [n for n in names if _first_alert(ordered, n) is not None]
    headline = (
        f"{len(alerting)} of {len(names)} columns drifted"
        + (f": {', '.join(html.escape(n) for n in alerting)}" if alerting else "")
        + f" in the latest window; {len(ever)} alerted in at least one of the {len(ordered)} windows."
    )
    rows = []
    for name in names:
        drift, base, live = latest.features[name], baseline.features[name], w.features[name]
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td>{drift.kind}</td>"
            f'<td style="color:{_STATUS_COLOURS[drift.status]};font-weight:bold">{drift.status}</td>'
            f"<td class=l>{_verdict(name, drift, settings, noise[name])}</td>"
            f"{_summary_cells(base.summarize(live.counts, live.missing, live.total), live.new_values)}"
            f"{_summary_cells(base.summarize(base.counts, base.missing, base.total))}</tr>"
        )
    cuts = "; ".join(
        f"{kind}: " + ", ".join(f"{_METRIC_NAMES[m]} {t.warn:g} / {t.alert:g}" for m, t in c.items())
        for kind, c in (
            ("numeric", settings.thresholds("", "numeric")),
            ("categorical", settings.thresholds("", "categorical")),
        )
    )
    figures = "\n".join(
        f'<figure><img src="{html.escape(file)}" alt="{html.escape(name)}"><figcaption>{html.escape(name)}: '
        f"baseline against the latest window</figcaption></figure>"
        for name, file in histograms
    )
    summary_head = "<th>count</th><th>missing</th><th>mean</th><th>p5</th><th>p50</th><th>p95</th>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-size: 90%; }}
th:first-child, td.l {{ text-align: left; }} td.l {{ white-space: nowrap; }} img {{ max-width: 100%; }}
.grid td.cell {{ color: white; min-width: 3em; text-align: center; }} .grid th.t {{ font-weight: normal; }}
.headline {{ font-size: 130%; font-weight: bold; color: {_STATUS_COLOURS[latest.status]}; }}
</style></head><body>
<h1>Drift report</h1>
<p class="headline" id="headline">{headline}</p>
<p>{len(ordered)} windows from {_stamp(ordered[0].window.start_ms)} to {_stamp(w.end_ms)}; model version
{w.model_version}. Latest window: {w.events} events from {len(w.worker_ids)} worker(s), status
<b style="color:{_STATUS_COLOURS[latest.status]}">{latest.status}</b>. Cuts (warn / alert): {cuts}.</p>
<h2>Status per column and window</h2>
<p>Cell: the value of the metric that set the status (hover for details); grey: fewer than
{settings.min_events} events, not judged.</p>
{_grid(ordered, names, settings)}
<h2>Latest window</h2>
<table id="latest"><tr><th rowspan=2>column</th><th rowspan=2>kind</th><th rowspan=2>status</th>
<th rowspan=2>set by (noise*)</th><th colspan=6>live</th>
<th colspan=6>baseline</th></tr><tr>{summary_head}{summary_head}</tr>
{"".join(rows)}
</table>
<p><small>* noise: 95% of the values the metric takes by sampling alone, for windows of {events}
events drawn from the baseline. Figures come from the bin counts and sums, so they merge across workers: the mean is
exact; quantiles are interpolated within their bin (off by at most its width), &lt; min and
&gt; max when they fall outside the training range. Categorical columns show the share outside
the training vocabulary and, where training values all fit it, the new values seen most with
their counts (a mergeable summary: exact up to 10 distinct new values).</small></p>
{quality}
<h2>Metrics over time</h2>
<img src="{html.escape(trend_file)}" alt="drift metrics per window">
<h2>Largest PSI in the latest window</h2>
{figures}
<p><small>Generated {_stamp(now_ms())}.</small></p>
</body></html>
"""
