"""Output schemas in a Schema Registry, over the Confluent API (Confluent's own registry, or
Apicurio's Confluent-compatible API at /apis/ccompat/v7).

Subjects follow the usual TopicNameStrategy, `<topic>-value`, so Confluent-aware consumers find
the writer schema of what the worker writes. Before a new model version's derived output schema
is served it is checked against its subject's compatibility level: `incompatibility` gives the
one-line reason to refuse the version with (the old one keeps serving), `register` records the
schema once the version serves. The input side (resolving Confluent-framed records by id) is
`streamer.codec.WriterSchemas`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

MAGIC = b"\x00"
NOTHING_REGISTERED = frozenset({40401, 40402})  # the Confluent API's "subject / version not found"


def subject(topic: str) -> str:
    return f"{topic}-value"


def frame(schema_id: int, payload: bytes) -> bytes:
    """The Confluent wire format: magic byte, big-endian schema id, then the Avro body."""
    return MAGIC + struct.pack(">I", schema_id) + payload


class SchemaRegistry:
    """The registry as the worker uses it; every call is one HTTP round trip, made at start and
    on a model swap only, never per record."""

    def __init__(self, url: str, config: Mapping[str, Any] | None = None) -> None:
        self.client = SchemaRegistryClient({"url": url, **(config or {})})

    def incompatibility(self, topic: str, schema: Mapping[str, Any]) -> str | None:
        """None if `topic`'s subject accepts `schema` (or has no version yet); otherwise why not."""
        name = subject(topic)
        try:
            if self.client.test_compatibility(name, _avro(schema)):
                return None
        except SchemaRegistryError as exc:
            if exc.error_code in NOTHING_REGISTERED:
                return None
            raise
        return f"its output schema for {topic} is incompatible with subject {name} ({self._level(name)} compatibility)"

    def register(self, topic: str, schema: Mapping[str, Any]) -> int:
        """The schema's id under `topic`'s subject (an existing identical version keeps its id)."""
        return int(self.client.register_schema(subject(topic), _avro(schema)))

    def _level(self, name: str) -> str:
        try:
            return str(self.client.get_compatibility(name))
        except SchemaRegistryError:
            return str(self.client.get_compatibility())  # the subject inherits the global level


def _avro(schema: Mapping[str, Any]) -> Schema:
    return Schema(json.dumps(schema, sort_keys=True), "AVRO")
