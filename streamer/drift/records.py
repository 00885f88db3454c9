"""Drift-topic records (schemas/drift_report.avsc): a window's raw counts with one worker's verdict.

Counts are raw so that the records of every worker merge downstream (`windows.merge_by_window`);
the verdict is recomputed after merging.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamer.drift.metrics import METRICS, FeatureDrift, WindowReport
from streamer.drift.windows import FeatureCounts, WindowCounts


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
                "sum": w.features[name].total if drift.kind == "numeric" else None,
                "new_values": [{"value": v, "count": c} for v, c in w.features[name].new_values],
                **{metric: drift.metric(metric) for metric in METRICS},
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
        features={
            f["name"]: FeatureCounts(
                tuple(int(c) for c in f["counts"]),
                int(f["missing"]),
                f.get("sum") or 0.0,
                tuple((n["value"], int(n["count"])) for n in f.get("new_values", ())),
            )
            for f in features
        },
    )
    drift = {
        f["name"]: FeatureDrift(f["kind"], {metric: f[metric] for metric in METRICS}, f["status"]) for f in features
    }
    return WindowReport(window, drift, record["status"])
