"""The scored record, derived from the config and the input schema: the worker and `streamer
score` both take it from here, so a record changes in one place. (What goes to the dead-letter
topic is `streamer.dead_letters`'.)

A scored record is the envelope (event id, entity, event time, score, alert, model name and
version, scored_at, features_degraded, shadow fields, source partition and offset) and the
input fields `outputs.pass_through` names, with their input types. `derived_schema` is that
record as an Avro schema; the configured `schemas.scored` is checked against it at start, and
`streamer schema scored` prints it. `written_schemas` names the schema each output topic is
written with, which `schemas.output_framing: confluent` registers (`streamer.registry`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from streamer.codec import AvroCodec, nullable_base
from streamer.errors import Fatal
from streamer.records import ScoredBatch
from streamer.registry import SchemaRegistry
from streamer.settings import Settings

_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
ENVELOPE: tuple[dict[str, Any], ...] = (
    {"name": "event_id", "type": "string", "doc": "event.id_field of the input."},
    {"name": "entity_id", "type": "string", "doc": "event.entity_field of the input: the entity the score is about."},
    {"name": "event_time", "type": _MILLIS},
    {"name": "score", "type": "double", "doc": "The model's model.score_output."},
    {"name": "alert", "type": "boolean", "doc": "score >= model.alert_threshold."},
    {"name": "model_name", "type": "string"},
    {"name": "model_version", "type": "long", "doc": "The version whose score is the decision (canary or primary)."},
    {"name": "scored_at", "type": _MILLIS},
    {"name": "features_degraded", "type": "boolean", "default": False},
    {"name": "shadow_score", "type": ["null", "double"], "default": None},
    {"name": "shadow_version", "type": ["null", "long"], "default": None},
    {"name": "source_partition", "type": "int"},
    {"name": "source_offset", "type": "long"},
)


def derived_schema(settings: Settings, inputs: AvroCodec) -> dict[str, Any]:
    """The scored record's Avro schema as this config and input schema make it."""
    event = settings.event
    fields = [dict(field) for field in ENVELOPE]
    if event.missing_entity == "defaults" and nullable_base(inputs.field_types.get(event.entity_field))[0]:
        fields[1] |= {"type": ["null", "string"], "default": None}  # entity-less events are scored
    envelope = {field["name"] for field in fields}
    for name in settings.outputs.pass_through:
        if name not in inputs.field_types:
            raise Fatal(f"outputs.pass_through: {inputs.path} has no field {name!r}; name input fields to copy")
        if name in envelope:
            raise Fatal(f"outputs.pass_through: {name!r} is an envelope field of every scored record; remove it")
        logical = inputs.logical_types.get(name)
        avro_type = inputs.field_types[name]
        fields.append({"name": name, "type": {"type": avro_type, "logicalType": logical} if logical else avro_type})
    return {"type": "record", "name": "Scored", "namespace": "streamer", "fields": fields}


def check_scored_schema(derived: dict[str, Any], given: AvroCodec) -> None:
    """`schemas.scored` must hold exactly the derived fields, each able to take every value the
    worker writes there (the derived type, or its nullable union)."""
    wanted = AvroCodec.field_types_of(derived)
    fix = "fix schemas.scored, or print the derived one with `streamer schema scored --config …`"
    for name, avro_type in wanted.items():
        has = given.field_types.get(name)
        if has is None:
            raise Fatal(f"schemas.scored: {given.path} has no field {name!r}, which the outputs write; {fix}")
        if has != avro_type and nullable_base(has) != (True, avro_type):
            raise Fatal(
                f"schemas.scored: field {name!r} of {given.path} is {json.dumps(has)}, the outputs write "
                f"{json.dumps(avro_type)}; {fix}"
            )
    extra = sorted(set(given.field_types) - set(wanted))
    if extra:
        raise Fatal(f"schemas.scored: {given.path} has fields {extra} the outputs do not write; {fix}")


def written_schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """Output topic → the schema its records are written with, as declared: what a Schema
    Registry must hold for readers to decode them by id."""
    topics, schemas = settings.topics, settings.schemas
    paths = {topics.scored: schemas.scored, topics.alerts: schemas.scored, topics.dlq: schemas.dlq}
    if topics.drift and settings.drift.enabled:
        paths[topics.drift] = schemas.drift
    return {topic: json.loads(path.read_text()) for topic, path in paths.items() if topic}


class Outputs:
    """The scored, alert and dead-letter records of one config, encoded and routed."""

    def __init__(self, settings: Settings, inputs: AvroCodec) -> None:
        self.settings = settings
        self.inputs = inputs
        self.scored_codec = AvroCodec(settings.schemas.scored)

    def check(self) -> None:
        """At start: the configured scored schema takes exactly the records the outputs make."""
        check_scored_schema(derived_schema(self.settings, self.inputs), self.scored_codec)

    def refuse_unregistrable(self, registry: SchemaRegistry, what: str) -> None:
        """`Fatal` for `what` (a model version) if the scored or alert topic's subject would not
        take its scored records. They are written with `schemas.scored`, which `check` holds to
        the derived fields; that file, not the derived schema, is checked and registered, since
        readers resolve a writer schema by its record name and field order."""
        topics = [topic for topic in (self.settings.topics.scored, self.settings.topics.alerts) if topic]
        registry.refuse_incompatible(what, topics, written_schemas(self.settings)[topics[0]])

    def columns(self, scored: ScoredBatch) -> dict[str, Any]:
        """The scored records of a batch as columns, in input order."""
        events, event = scored.events, self.settings.event
        n = len(events)
        shadow_scores = [] if scored.shadow_scores is None else scored.shadow_scores.tolist()
        shadows = [None if s != s else s for s in shadow_scores] or [None] * n  # NaN: not shadowed
        return {
            "event_id": events.columns[event.id_field].tolist(),
            "entity_id": events.columns[event.entity_field].tolist(),
            "event_time": events.columns[event.time_field],
            "score": scored.scores,
            "alert": scored.alerts,
            "model_name": [scored.model_name] * n,
            "model_version": scored.model_versions,
            "scored_at": np.full(n, scored.scored_at_ms, dtype=np.int64),
            "features_degraded": np.full(n, scored.features_degraded),
            "shadow_score": shadows,
            "shadow_version": [None if s is None else scored.shadow_version for s in shadows],
            "source_partition": events.partitions,
            "source_offset": events.offsets,
            **{name: events.columns[name] for name in self.settings.outputs.pass_through},
        }

    def rows(self, scored: ScoredBatch) -> list[dict[str, Any]]:
        """`columns` as rows, for container files."""
        columns = self.columns(scored)
        lists = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns.values()]
        return [dict(zip(columns, values, strict=True)) for values in zip(*lists, strict=True)]

    def encode_scored(self, scored: ScoredBatch) -> list[bytes]:
        """The scored topic's values, in input order; the worker routes them (and the alerts)."""
        return self.scored_codec.encode_columns(self.columns(scored), len(scored.events))
