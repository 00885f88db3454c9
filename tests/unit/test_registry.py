"""streamer.registry against the stand-in registry (tests/registry_standin.py, an HTTP server
speaking the Confluent API, not a mock of the client): subject naming, framing, the
compatibility verdict, registration, and the one-line refusals that name the key to fix."""

from __future__ import annotations

import json

import pytest

from streamer.errors import Fatal
from streamer.registry import SchemaRegistry, frame, subject
from streamer.settings import SchemaSettings
from tests.conftest import free_port
from tests.registry_standin import StandInRegistry

SCORED = {"type": "record", "name": "Scored", "fields": [{"name": "score", "type": "double"}]}
WIDER = {**SCORED, "fields": [*SCORED["fields"], {"name": "reason", "type": "string", "default": ""}]}
BREAKING = {**SCORED, "fields": [{"name": "score", "type": "string"}]}
FAST = {"max.retries": 0}  # the client's default retries back off for seconds


@pytest.fixture
def registry(schema_registry: StandInRegistry) -> SchemaRegistry:
    return SchemaRegistry(schema_registry.url, FAST)


def test_subjects_and_framing_follow_the_confluent_conventions() -> None:
    assert subject("payments.scored") == "payments.scored-value"
    assert frame(258, b"body") == b"\x00\x00\x00\x01\x02body"


def test_a_first_schema_is_compatible_and_registers(registry: SchemaRegistry, schema_registry: StandInRegistry) -> None:
    assert registry.incompatibility("scored", SCORED) is None
    first = registry.register("scored", SCORED)
    assert registry.register("scored", SCORED) == first  # the same schema keeps its id
    assert registry.register("alerts", SCORED) == first  # ids are global, as in Confluent's registry
    assert schema_registry.subjects.keys() == {"scored-value", "alerts-value"}


def test_an_incompatible_output_schema_gets_a_one_line_reason(registry: SchemaRegistry) -> None:
    registry.register("scored", SCORED)
    assert registry.incompatibility("scored", WIDER) is None
    reason = registry.incompatibility("scored", BREAKING)
    assert reason == "its output schema for scored is incompatible with subject scored-value (BACKWARD compatibility)"
    with pytest.raises(Fatal, match=r"^model m v2: its output schema for scored is incompatible") as refused:
        registry.refuse_incompatible("model m v2", ["scored"], BREAKING)
    assert "\n" not in str(refused.value)


def test_frames_register_each_topic_once_and_a_refusal_names_the_subject(
    registry: SchemaRegistry, schema_registry: StandInRegistry
) -> None:
    frames = registry.frames({"scored": SCORED, "dlq": WIDER})
    assert frames == {"scored": frame(1, b""), "dlq": frame(2, b"")}
    schema_registry.levels["scored-value"] = "FULL"
    with pytest.raises(Fatal, match=r"^schemas: subject scored-value refuses the schema written to scored \(FULL"):
        registry.frames({"scored": BREAKING})
    schema_registry.levels["scored-value"] = "NONE"
    assert registry.frames({"scored": BREAKING}) == {"scored": frame(3, b"")}
    assert json.loads(schema_registry.schemas[2]) == BREAKING


def test_an_unreachable_registry_names_the_key_and_never_the_url() -> None:
    url = f"http://streamer:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(Fatal) as refused:
        SchemaRegistry(url, FAST).register("scored", SCORED)
    assert str(refused.value).startswith("schemas.registry_url: the Schema Registry does not answer (ConnectError)")
    assert "hunter2" not in str(refused.value) and "127.0.0.1" not in str(refused.value)


def test_basic_auth_passes_through_and_a_refused_client_names_the_config_key() -> None:
    with StandInRegistry(user_info="streamer:hunter2").running() as locked:
        assert SchemaRegistry(locked.url, {**FAST, "basic.auth.user.info": "streamer:hunter2"}).register("s", SCORED)
        refused = r"^schemas.registry_config: the Schema Registry refuses this client \(HTTP 401"
        with pytest.raises(Fatal, match=refused):
            SchemaRegistry(locked.url, {**FAST, "basic.auth.user.info": "streamer:wrong"}).register("s", SCORED)


def test_a_config_the_client_refuses_is_fatal_without_its_values() -> None:
    with pytest.raises(Fatal, match=r"^schemas.registry_config: .*Unrecognized properties: basic.auth.userinfo"):
        SchemaRegistry("http://127.0.0.1:1", {"basic.auth.userinfo": "streamer:hunter2"})
    with pytest.raises(Fatal) as refused:
        SchemaRegistry("ftp://streamer:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(refused.value) and "<schemas.registry_url>" in str(refused.value)


def test_plain_outputs_need_no_registry() -> None:
    files = {"input": "in.avsc", "scored": "s.avsc", "dlq": "d.avsc"}
    assert SchemaRegistry.of(SchemaSettings.model_validate({**files, "registry_url": "http://x:1"})) is None
    framed = SchemaSettings.model_validate({**files, "registry_url": "http://x:1", "output_framing": "confluent"})
    assert isinstance(SchemaRegistry.of(framed), SchemaRegistry)
