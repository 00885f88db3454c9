"""The scored record, derived from the config, the input schema and the model's signature: the
worker and `streamer score` both take it from here, so a record changes in one place. (What goes
to the dead-letter topic is `streamer.dead_letters`'.)

A scored record is the envelope (event id, entity, event time, model name and version,
scored_at, features_degraded, shadow fields, source partition and offset), the signature
outputs `outputs.values` selects (each under its output's name: a scalar, a fixed-length vector,
or top-k ids and scores), one boolean per decision rule, and the input fields
`outputs.pass_through` names, with their input types. A rule that holds also sends the record
to the rule's topic. `derived_schema` is that record as an Avro schema; the configured
`schemas.scored` is checked against it at start, and `streamer schema scored` prints it.
`written_schemas` names the schema each output topic is written with, which
`schemas.output_framing: confluent` registers (`streamer.registry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.codec import AvroCodec, nullable_base
from streamer.errors import Fatal
from streamer.output_settings import OutputSelection, Rule
from streamer.records import ScoredBatch
from streamer.registry import SchemaRegistry
from streamer.settings import Settings

if TYPE_CHECKING:
    import tensorflow as tf

_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
ENVELOPE: tuple[dict[str, Any], ...] = (
    {"name": "event_id", "type": "string", "doc": "event.id_field of the input."},
    {"name": "entity_id", "type": "string", "doc": "event.entity_field of the input: the entity the score is about."},
    {"name": "event_time", "type": _MILLIS},
    {"name": "model_name", "type": "string"},
    {"name": "model_version", "type": "long", "doc": "The version whose outputs are the decision (canary or primary)."},
    {"name": "scored_at", "type": _MILLIS},
    {"name": "features_degraded", "type": "boolean", "default": False},
    {"name": "shadow_score", "type": ["null", "double"], "default": None},
    {"name": "shadow_version", "type": ["null", "long"], "default": None},
    {"name": "source_partition", "type": "int"},
    {"name": "source_offset", "type": "long"},
)
SignatureOutputs = Mapping[str, "tf.TensorSpec"]


def _item_type(spec: tf.TensorSpec, ids: bool = False) -> str | None:
    """The Avro type one element of a signature output is written as; None: not one the record takes."""
    if spec.dtype.is_floating:
        return None if ids else "double"
    if spec.dtype.is_integer:
        return "long"
    return "string" if ids and spec.dtype.name == "string" else None


def _width(spec: tf.TensorSpec) -> int | None:
    """Values per event of an output: 1 for [batch] or [batch, 1], n for [batch, n]; None for others."""
    dims = spec.shape.as_list() if spec.shape.rank is not None else []
    return 1 if len(dims) == 1 else dims[1] if len(dims) == 2 else None


def signature_problem(values: tuple[OutputSelection, ...], outputs: SignatureOutputs) -> str | None:
    """Why a signature cannot fill the selected outputs, or None: each output present, of a type
    the record takes, with the static shape the config names."""
    for selection in values:
        wanted = {name: 1 for name in selection.names}  # values per event
        if selection.kind == "vector":
            wanted[selection.output] = selection.length
        elif selection.kind == "top_k":
            wanted = dict.fromkeys(selection.names, selection.k)
        for name, width in wanted.items():
            spec = outputs.get(name)
            if spec is None:
                return f"no output {name!r} (has {sorted(outputs)}); fix outputs.values"
            ids = selection.kind == "top_k" and name == selection.ids
            shape = spec.shape.as_list() if spec.shape.rank is not None else "of unknown rank"
            if _item_type(spec, ids) is None:
                kind = "string or integer ids" if ids else "numbers"
                return f"output {name!r} is {spec.dtype.name}, not {kind}; fix outputs.values or re-export"
            if _width(spec) != width or (selection.kind != "scalar" and spec.shape.rank != 2):
                expected = "[batch] or [batch, 1]" if selection.kind == "scalar" else f"[batch, {width}]"
                return f"output {name!r} has shape {shape}, outputs.values wants {expected}; fix it or re-export"
    return None


def _output_fields(values: tuple[OutputSelection, ...], outputs: SignatureOutputs) -> list[dict[str, Any]]:
    fields = []
    for selection in values:
        for name in selection.names:
            spec = outputs[name]
            item = _item_type(spec, selection.kind == "top_k" and name == selection.ids)
            fields.append(
                {"name": name, "type": item if selection.kind == "scalar" else {"type": "array", "items": item}}
            )
    return fields


def derived_schema(settings: Settings, inputs: AvroCodec, outputs: SignatureOutputs) -> dict[str, Any]:
    """The scored record's Avro schema as this config, input schema and model signature
    (`LoadedModel.outputs`) make it."""
    problem = signature_problem(settings.outputs.values, outputs)
    if problem is not None:
        raise Fatal(f"outputs.values: the model's signature: {problem}")
    event = settings.event
    fields = [dict(field) for field in ENVELOPE]
    if event.missing_entity == "defaults" and nullable_base(inputs.field_types.get(event.entity_field))[0]:
        fields[1] |= {"type": ["null", "string"], "default": None}  # entity-less events are scored
    decided = [
        {"name": rule.name, "type": "boolean", "doc": f"{rule.output} >= {rule.at_least}"} for rule in settings.rules
    ]
    fields[3:3] = _output_fields(settings.outputs.values, outputs) + decided
    taken = {field["name"] for field in fields}
    if len(taken) < len(fields):
        names = [field["name"] for field in fields]
        twice = sorted({name for name in names if names.count(name) > 1})
        raise Fatal(f"outputs: field {twice[0]!r} is written twice (an envelope field, output or rule); rename one")
    for name in settings.outputs.pass_through:
        if name not in inputs.field_types:
            raise Fatal(f"outputs.pass_through: {inputs.path} has no field {name!r}; name input fields to copy")
        if name in taken:
            raise Fatal(f"outputs.pass_through: {name!r} is an envelope, output or rule field; remove it")
        logical = inputs.logical_types.get(name)
        avro_type = inputs.field_types[name]
        fields.append({"name": name, "type": {"type": avro_type, "logicalType": logical} if logical else avro_type})
    return {"type": "record", "name": "Scored", "namespace": "streamer", "fields": fields}


def decision(rule: Rule, scored: ScoredBatch) -> np.ndarray:
    """Where `rule` holds, per event: a vector or top-k holds it when its largest value does."""
    values = scored.values[rule.output]
    return np.asarray((values.max(axis=1) if values.ndim == 2 else values) >= rule.at_least, dtype=bool)


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
    paths = {topic: schemas.scored for topic in _scored_topics(settings)} | {topics.dlq: schemas.dlq}
    if topics.drift and settings.drift.enabled:
        paths[topics.drift] = schemas.drift
    return {topic: json.loads(path.read_text()) for topic, path in paths.items() if topic}


def _scored_topics(settings: Settings) -> list[str]:
    """The topics scored records go to: the scored topic and those of the decision rules."""
    return list(dict.fromkeys([settings.topics.scored, *(rule.topic for rule in settings.rules if rule.topic)]))


class Outputs:
    """The scored records of one config, encoded, and the topics its rules route them to."""

    def __init__(self, settings: Settings, inputs: AvroCodec) -> None:
        self.settings = settings
        self.inputs = inputs
        self.scored_codec = AvroCodec(settings.schemas.scored)
        self.rules = settings.rules

    def check(self, outputs: SignatureOutputs) -> None:
        """At start, with the first model's signature: the configured scored schema takes exactly
        the records the outputs make."""
        check_scored_schema(derived_schema(self.settings, self.inputs, outputs), self.scored_codec)

    def refuse_unregistrable(self, registry: SchemaRegistry, what: str) -> None:
        """`Fatal` for `what` (a model version) if the subject of the scored topic or of a rule's
        topic would not take its scored records. They are written with `schemas.scored`, which `check` holds to
        the derived fields; that file, not the derived schema, is checked and registered, since
        readers resolve a writer schema by its record name and field order."""
        topics = _scored_topics(self.settings)
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
            **{name: v.tolist() if v.ndim == 2 else v for name, v in scored.values.items()},  # arrays as lists
            **{rule.name: decision(rule, scored) for rule in self.rules},
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

    def routes(self, scored: ScoredBatch) -> list[tuple[str, np.ndarray]]:
        """(topic, events it receives) per rule with a topic, in rule order."""
        return [(rule.topic, decision(rule, scored)) for rule in self.rules if rule.topic]

    def rows(self, scored: ScoredBatch) -> list[dict[str, Any]]:
        """`columns` as rows, for container files."""
        columns = self.columns(scored)
        lists = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns.values()]
        return [dict(zip(columns, values, strict=True)) for values in zip(*lists, strict=True)]

    def encode_scored(self, scored: ScoredBatch) -> list[bytes]:
        """The scored topic's values, in input order; the worker sends them, and `routes` says where else."""
        return self.scored_codec.encode_columns(self.columns(scored), len(scored.events))
