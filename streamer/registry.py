"""Output schemas in a Schema Registry, over the Confluent API (Confluent's own registry, or
Apicurio's Confluent-compatible API at /apis/ccompat/v7).

Subjects follow the usual TopicNameStrategy, `<topic>-value`, so Confluent-aware consumers find
the writer schema of what the worker writes. With `schemas.output_framing: confluent` the worker
registers each output topic's schema once, at start (`frames`), and every record it writes then
starts with that topic's 5-byte header: framing costs a prefix, never an HTTP call. Every model
version, the first one included, is checked against its outputs' subjects before it serves
(`refuse_incompatible`): at start the `Fatal` stops the worker; on a swap it refuses the version
like any other bad one, and the old one keeps serving. The input side (resolving
Confluent-framed records by id) is `streamer.codec.WriterSchemas`.

A registry that does not answer or refuses the client is a `Fatal` naming the config key to fix.
No message repeats the URL or a client property: either can hold credentials.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.common._httpx_compat import httpx  # httpx2 or httpx, as the client loaded
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streamer.errors import Fatal
from streamer.settings import SchemaSettings

MAGIC = b"\x00"
NOTHING_REGISTERED = frozenset({40401, 40402})  # the Confluent API's "subject / version not found"
NO_SUBJECT_LEVEL = frozenset({40401, 40408})  # no compatibility set on the subject: it inherits the global one
INCOMPATIBLE = 409  # the Confluent API's error code (and HTTP status) for a registration it refuses
T = TypeVar("T")


def subject(topic: str) -> str:
    return f"{topic}-value"


def frame(schema_id: int, payload: bytes) -> bytes:
    """The Confluent wire format: magic byte, big-endian schema id, then the Avro body."""
    return MAGIC + struct.pack(">I", schema_id) + payload


def unframed(value: bytes, framing: str) -> bytes:
    """The Avro body of a record the worker wrote under `schemas.output_framing`, for its own
    readers (the drift report, the demo), which know the schema."""
    return value[len(MAGIC) + 4 :] if framing == "confluent" else value


class SchemaRegistry:
    """The registry as the worker uses it; every call is one HTTP round trip, made at start and
    on a model swap only, never per record. Constructing it makes none."""

    def __init__(self, url: str, config: Mapping[str, Any] | None = None) -> None:
        try:
            self.client = SchemaRegistryClient({"url": url, **(config or {})})
        except (ValueError, TypeError) as exc:  # the client's own checks; only its URL check quotes a value
            problem = str(exc).replace(url, "<schemas.registry_url>")
            raise Fatal(f"schemas.registry_config: the Schema Registry client refuses it ({problem})") from exc

    @classmethod
    def of(cls, schemas: SchemaSettings) -> SchemaRegistry | None:
        """Where the outputs' schemas are registered; None when outputs are written plain."""
        if schemas.output_framing == "plain" or schemas.registry_url is None:
            return None
        return cls(schemas.registry_url, schemas.registry_config)

    def incompatibility(self, topic: str, schema: Mapping[str, Any]) -> str | None:
        """None if `topic`'s subject accepts `schema` (or has no version yet); otherwise why not."""
        name = subject(topic)
        try:
            if self._call(lambda: self.client.test_compatibility(name, _avro(schema)), NOTHING_REGISTERED):
                return None
        except SchemaRegistryError:  # only the expected "nothing registered yet" gets here
            return None
        return f"its output schema for {topic} is incompatible with subject {name} ({self._level(name)} compatibility)"

    def refuse_incompatible(self, what: str, topics: Iterable[str], schema: Mapping[str, Any]) -> None:
        """`Fatal` for `what` (a model version) if any of `topics` would not accept `schema`."""
        for topic in topics:
            reason = self.incompatibility(topic, schema)
            if reason is not None:
                raise Fatal(
                    f"{what}: {reason}; evolve schemas.scored compatibly (new fields need defaults) or change "
                    "the subject's compatibility level"
                )

    def register(self, topic: str, schema: Mapping[str, Any]) -> int:
        """The schema's id under `topic`'s subject (an existing identical version keeps its id)."""
        name = subject(topic)
        try:
            return int(self._call(lambda: self.client.register_schema(name, _avro(schema)), {INCOMPATIBLE}))
        except SchemaRegistryError as exc:
            raise Fatal(
                f"schemas: subject {name} refuses the schema written to {topic} ({self._level(name)} compatibility: "
                f"{exc.error_message}); write a schema it accepts or change the subject's compatibility level"
            ) from exc

    def frames(self, schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, bytes]:
        """Per output topic, the header each of its records starts with, its schema registered."""
        return {topic: frame(self.register(topic, schema), b"") for topic, schema in schemas.items()}

    def _level(self, name: str) -> str:
        try:
            return str(self._call(lambda: self.client.get_compatibility(name), NO_SUBJECT_LEVEL))
        except SchemaRegistryError:
            return str(self._call(self.client.get_compatibility))  # the subject inherits the global level

    @staticmethod
    def _call(request: Callable[[], T], expected: Iterable[int] = ()) -> T:
        """`request`, its failures as one-line `Fatal`s naming the key to fix; a registry error
        whose code is in `expected` is the caller's to handle."""
        try:
            return request()
        except SchemaRegistryError as exc:
            if exc.error_code in set(expected):
                raise
            if exc.http_status_code in (401, 403):
                raise Fatal(
                    f"schemas.registry_config: the Schema Registry refuses this client (HTTP {exc.http_status_code}); "
                    "set basic.auth.user.info to an account that may read and register subjects"
                ) from exc
            raise Fatal(
                f"schemas.registry_url: the Schema Registry answered HTTP {exc.http_status_code} "
                f"({exc.error_message}); see its log"
            ) from exc
        except httpx.TransportError as exc:
            raise Fatal(
                f"schemas.registry_url: the Schema Registry does not answer ({type(exc).__name__}); start it or fix "
                "the URL, or set schemas.output_framing: plain"
            ) from exc


def _avro(schema: Mapping[str, Any]) -> Schema:
    return Schema(json.dumps(schema, sort_keys=True), "AVRO")
