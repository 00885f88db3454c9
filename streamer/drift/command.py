"""`streamer drift report`: the group's view of drift, for analysts, and of model quality beside it.

Every worker publishes its own windows; here they are read back from the drift topic, merged per
window (raw counts add up), judged again against the model's baseline and drawn. Windows of the
newest model version on the topic are reported: older versions had other bins. With a
`quality:` section, the label consumers' increments are read from the quality topic, merged and
shown for every model version.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamer.codec import AvroCodec
from streamer.drift.histograms import BASELINE_FILE, Baseline
from streamer.drift.metrics import evaluate
from streamer.drift.records import from_avro_record
from streamer.drift.report import render_report
from streamer.drift.windows import merge_by_window
from streamer.errors import Fatal
from streamer.kafka.consumer import read_topic_to_end
from streamer.quality.records import group_view
from streamer.quality.report import render_quality
from streamer.quality.windows import evaluate as evaluate_quality
from streamer.registry import unframed
from streamer.settings import Settings


def write_report(settings: Settings, out: Path) -> str:
    topic = settings.topics.drift
    if not topic:
        raise Fatal("topics.drift is not set: workers publish no drift windows; set it and restart them")
    codec = AvroCodec(settings.schemas.drift)
    framing = settings.schemas.output_framing
    windows = [
        from_avro_record(codec.decode_one(unframed(value, framing))).window
        for value in read_topic_to_end(settings.admin_config(), topic)
    ]
    if not windows:
        raise Fatal(f"drift topic {topic} holds no windows yet; windows close every drift.window_s of event time")
    version = max(w.model_version for w in windows)
    baseline_path = settings.model.path / str(version) / BASELINE_FILE
    try:
        baseline = Baseline.from_dict(json.loads(baseline_path.read_text()))
    except OSError as exc:
        raise Fatal(
            f"drift report: cannot read {baseline_path} ({exc.strerror}); point model.path at the packages"
        ) from exc
    merged = merge_by_window(w for w in windows if w.model_version == version)
    reports = [evaluate(w, baseline, settings.drift) for w in merged]
    html = render_report(reports, baseline, out, settings.drift, _quality_section(settings))
    workers = {i for w in merged for i in w.worker_ids}
    latest = reports[-1]
    return (
        f"drift report {html}: {len(merged)} windows of model version {version} from {len(workers)} worker(s); "
        f"latest window {latest.status}"
    )


def _quality_section(settings: Settings) -> str:
    """Model quality beside drift; empty without a `quality:` section."""
    if settings.quality is None:
        return ""
    return render_quality([evaluate_quality(w) for w in group_view(settings)])
