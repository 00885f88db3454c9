"""The event contract, checked at start: each input field the config or the feature spec names
must be in the input schema with a type the worker can read. A mismatch stops `run` or `score`
with one line naming the key and the fix, instead of a KeyError on the first batch (or, worse,
a crash on the first null)."""

from __future__ import annotations

import json

from streamer.codec import AvroCodec, nullable_base
from streamer.errors import Fatal
from streamer.feature_spec import FeatureSpec
from streamer.settings import EventSettings

# Event time is milliseconds: a long declared as such, or plain. timestamp-micros would read as
# a time a thousand times later.
TIME_LOGICAL_TYPES = (None, "timestamp-millis", "local-timestamp-millis")
NUMERIC = frozenset({"int", "long", "float", "double"})


def check_event_contract(event: EventSettings, inputs: AvroCodec, scored: AvroCodec) -> None:
    _expect(inputs, "event.id_field", event.id_field, frozenset({"string"}), False, "the event id")
    _expect(inputs, "event.time_field", event.time_field, frozenset({"long"}), False, "event time in ms")
    logical = inputs.logical_types.get(event.time_field)
    if logical not in TIME_LOGICAL_TYPES:
        raise Fatal(
            f"event.time_field: field {event.time_field!r} of {inputs.path} is {logical}, not milliseconds; "
            "declare it timestamp-millis (or a plain long of ms), or point event.time_field at such a field"
        )
    _expect(inputs, "event.entity_field", event.entity_field, frozenset({"string"}), True, "the entity id")
    entity_nullable = nullable_base(inputs.field_types[event.entity_field])[0]
    if (
        event.missing_entity == "defaults"
        and entity_nullable
        and not nullable_base(scored.field_types.get("entity_id"))[0]
    ):
        raise Fatal(
            f"event.missing_entity: defaults scores events whose {event.entity_field} is null, but entity_id "
            f'in {scored.path} is not nullable; declare it ["null", "string"] or set event.missing_entity: dead_letter'
        )


def check_entity_features(spec: FeatureSpec, inputs: AvroCodec) -> None:
    """The input fields entity features key state by (`entity:`) and aggregate (`of:`)."""
    for feature in spec.entity_features():
        key = f"feature spec: {feature.name}"
        _expect(inputs, f"{key}.entity", feature.entity, frozenset({"string"}), True, "the entity id")
        if feature.of is not None:
            _expect(inputs, f"{key}.of", feature.of, NUMERIC, True, "the number it aggregates")


def _expect(codec: AvroCodec, key: str, name: str, types: frozenset[str], nullable: bool, holding: str) -> None:
    fix = f"point {key} at the field holding {holding}, or fix {codec.path}"
    if name not in codec.field_types:
        raise Fatal(f"{key}: {codec.path} has no field {name!r} (it has {', '.join(codec.field_types)}); {fix}")
    avro_type = codec.field_types[name]
    is_nullable, base = nullable_base(avro_type)
    if base not in types or (is_nullable and not nullable):
        wanted = " or ".join(sorted(types))
        wanted = f"a {wanted} (null allowed)" if nullable else f"a non-null {wanted}"
        raise Fatal(f"{key}: field {name!r} of {codec.path} is {json.dumps(avro_type)}, not {wanted}; {fix}")
