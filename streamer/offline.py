"""`streamer score`: the scoring path without Kafka, for backfills, replays and parity checks.

Avro container in → decode → batch → model → encode → Avro container out, through the same
`pipeline` and `codec` functions the worker uses; only the transport differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamer import pipeline
from streamer.codec import AvroCodec, scored_rows
from streamer.errors import Fatal
from streamer.features import FeatureStore
from streamer.lifecycle import Serving
from streamer.metrics import Metrics
from streamer.model import load_model
from streamer.records import EventBatch, now_ms
from streamer.settings import Settings


def score_file(settings: Settings, source: Path, target: Path) -> int:
    """Score every record of `source` into `target`; returns the count. `source_partition` is -1
    and `source_offset` the record's index in the file, so rows trace back to their input."""
    input_codec = AvroCodec(settings.schemas.input)
    scored_codec = AvroCodec(settings.schemas.scored)
    model_settings = settings.model
    model = load_model(model_settings, input_codec.field_types)
    features = FeatureStore(settings.features, model.spec, Metrics.create(), model_settings.time_field, offline=True)
    features.check_schema(input_codec.field_types)
    features.start()
    batching = settings.batching
    position = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal position
        for columns in input_codec.read_container(source, batching.max_batch_size):
            n = len(next(iter(columns.values())))
            events = EventBatch(
                columns, np.full(n, -1, np.int32), np.arange(position, position + n, dtype=np.int64), [None] * n
            )
            position += n
            enrichment = features.enrich(events, update=False)
            scored, rejected = pipeline.score_batch(
                Serving(model),
                events,
                batching.allowed_batch_sizes,
                model_settings.alert_threshold,
                now_ms(),
                enrichment,
            )
            if rejected:
                row, reason = min(rejected.items())
                raise Fatal(f"{source}: record {int(events.offsets[row])}: {reason}; fix or drop the record")
            yield from scored_rows(
                scored, model_settings.key_field, model_settings.entity_field, model_settings.time_field
            )

    scored_codec.write_container(target, rows())
    return position
