"""Quality-topic records (schemas/quality_window.avsc): one consumer's increments of a window's counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from streamer.codec import AvroCodec
from streamer.kafka.consumer import read_topic_to_end
from streamer.quality.windows import QualityCounts, merge_by_window
from streamer.settings import Settings

_RENAMED = {"start_ms": "window_start", "end_ms": "window_end"}


def to_avro_record(counts: QualityCounts) -> dict[str, Any]:
    return {_RENAMED.get(name, name): value for name, value in asdict(counts).items()}


def from_avro_record(record: Mapping[str, Any]) -> QualityCounts:
    """The inverse of `to_avro_record`; timestamps are plain ms (logical types stripped)."""
    return QualityCounts(
        int(record["window_start"]),
        int(record["window_end"]),
        int(record["model_version"]),
        float(record["threshold"]),
        tuple(record["consumer_ids"]),
        tuple(int(c) for c in record["positives"]),
        tuple(int(c) for c in record["negatives"]),
        tuple(float(s) for s in record["score_sums"]),
        *(int(record[name]) for name in ("true_positives", "false_positives", "false_negatives", "true_negatives")),
    )


def group_view(settings: Settings) -> list[QualityCounts]:
    """Every consumer's increments on the quality topic, merged per window and model version."""
    if not settings.topics.quality:
        return []
    codec = AvroCodec(settings.schemas.quality)
    values = read_topic_to_end(settings.admin_config(), settings.topics.quality)
    return merge_by_window(from_avro_record(codec.decode_one(v)) for v in values)
