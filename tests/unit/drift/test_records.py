"""The drift-topic record: a round trip through the declared Avro schema."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro

from streamer.drift.histograms import (
    Baseline,
)
from streamer.drift.metrics import evaluate
from streamer.drift.records import from_avro_record, to_avro_record
from tests.conftest import SCHEMAS
from tests.unit.drift.conftest import SETTINGS, N, one_window, payments

# --- drift topic ----------------------------------------------------------------------------------


def _without_logical_types(schema: Any) -> Any:
    """As streamer.codec reads schemas: timestamps stay plain longs."""
    if isinstance(schema, dict):
        bare = {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
        return bare["type"] if bare.keys() == {"type"} else bare
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


def test_avro_round_trip(baseline: Baseline) -> None:
    declared = json.loads((SCHEMAS / "drift_report.avsc").read_text())
    fastavro.parse_schema(declared)  # valid with its logical types too
    schema = fastavro.parse_schema(_without_logical_types(declared))
    columns, scores = payments(N, 52)
    columns["country"][:10] = None
    report = evaluate(one_window(baseline, columns, scores), baseline, SETTINGS)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, to_avro_record(report))
    buffer.seek(0)
    decoded = from_avro_record(fastavro.schemaless_reader(buffer, schema))  # type: ignore[arg-type]
    assert decoded == report
    assert decoded.features["country"].metric("ks") is None and decoded.window.features["country"].missing == 10
