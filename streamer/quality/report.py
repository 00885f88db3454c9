"""The quality section of the analyst's report (`streamer drift report`), beside drift.

One row per window of event time and model version, so a canary's figures stand next to the
primary's for the same traffic period. Labels keep arriving for old windows: a window's row
grows as they do, and the labelled count says how much of it is known yet.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from streamer.quality.windows import Quality


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def render_quality(figures: Sequence[Quality]) -> str:
    """An HTML section: a headline on the newest window per model version, then every window."""
    if not figures:
        return "<h2>Model quality from labels</h2><p>No labels joined to scores yet.</p>"
    ordered = sorted(figures, key=lambda q: (q.counts.start_ms, q.counts.model_version))
    newest: dict[int, Quality] = {q.counts.model_version: q for q in ordered}
    headline = "; ".join(
        f"model v{version} ({_stamp(q.counts.start_ms)}, {q.counts.labelled} labels): precision "
        f"{_share(q.precision) or 'n/a'}, recall {_share(q.recall) or 'n/a'}, AUC {_share(q.auc) or 'n/a'}"
        for version, q in sorted(newest.items())
    )
    rows = "\n".join(
        f"<tr><td class=l>{_stamp(q.counts.start_ms)}</td><td>{q.counts.model_version}</td>"
        f"<td>{q.counts.labelled}</td><td>{q.counts.true_positives + q.counts.false_negatives}</td>"
        f"<td>{_share(q.base_rate)}</td><td>{_share(q.precision)}</td><td>{_share(q.recall)}</td>"
        f"<td>{_share(q.auc)}{'' if q.auc_bound is None else f' &plusmn; {q.auc_bound:.3f}'}</td>"
        f"<td>{_share(q.calibration_error)}</td><td class=l>{html.escape(', '.join(q.counts.consumer_ids))}</td></tr>"
        for q in ordered
    )
    threshold = ordered[-1].counts.threshold
    return f"""<h2>Model quality from labels</h2>
<p class="headline" id="quality-headline">{headline}</p>
<table id="quality"><tr><th>window (event time)</th><th>model</th><th>labelled</th><th>positives</th>
<th>base rate</th><th>precision</th><th>recall</th><th>AUC</th><th>calibration error</th><th>consumers</th></tr>
{rows}
</table>
<p><small>Labels joined to the score their event got, per window of the event's time and the model version
that decided. Precision and recall at the alert threshold ({threshold:g}) are exact; AUC comes from score
histograms on fixed bins and is within &plusmn; the figure beside it of the exact one (half the share of
positive-negative pairs in one bin); the calibration error is the event-weighted mean |mean score - share
of positives| over those bins. Late labels update their event's window.</small></p>
"""
