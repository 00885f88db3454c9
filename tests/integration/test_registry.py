"""Confluent-framed outputs against the real Kafka stack and the stand-in Schema Registry
(tests/registry_standin.py; no real registry runs here, docker/README.md says why): every output
decodes with confluent-kafka's AvroDeserializer through the schema registered under its topic's
subject, and a model version the subject would not take is refused while the old one serves."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streamer.errors import Fatal
from streamer.registry import subject
from streamer.settings import Settings
from streamer.worker import Worker
from tests.conftest import SCHEMAS, drop_version, free_port
from tests.integration.conftest import Read, SettingsFactory, produce_payments, produce_values, read_topic
from tests.integration.test_cli import fails_with, write_config
from tests.registry_standin import StandInRegistry

EVENTS = 400
POISON = [b"\x07not avro", b"\xff\xff\xff"]
# What another producer registered under the scored subject: `score` as a string. The worker's
# scored records (a double) cannot be read as it under BACKWARD.
CONFLICTING = json.loads((SCHEMAS / "scored_payment.avsc").read_text())
CONFLICTING["fields"] = [{**f, "type": "string"} if f["name"] == "score" else f for f in CONFLICTING["fields"]]


def framed_settings(make_settings: SettingsFactory, registry_url: str, **sections: Any) -> Settings:
    schemas = {"output_framing": "confluent", "registry_url": registry_url, "registry_config": {"max.retries": 0}}
    return make_settings(schemas=schemas, **sections)


def decoded(registry: StandInRegistry, topic: str, records: list[Read]) -> list[dict[str, Any]]:
    """As a Confluent consumer reads them: the writer schema fetched by the id in each record."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    context = SerializationContext(topic, MessageField.VALUE)
    return [deserialize(r.value, context) for r in records]


def ids(records: list[Read]) -> set[int]:
    assert all(r.value[:1] == b"\x00" for r in records)
    return {int.from_bytes(r.value[1:5], "big") for r in records}


def wait_for(condition: Any, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_framed_outputs_decode_by_id_and_an_incompatible_version_is_refused_while_the_old_one_serves(
    make_settings: SettingsFactory,
    demo_model: Path,
    tmp_path: Path,
    schema_registry: StandInRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    models = tmp_path / "fraud"
    shutil.copytree(demo_model, models)
    settings = framed_settings(
        make_settings,
        schema_registry.url,
        topics={"drift": f"drift-{uuid.uuid4().hex[:10]}"},
        model={"path": str(models), "alert_threshold": 0.0, "watch_interval_s": 0.2},  # every record alerts
    )
    topics = settings.topics
    assert topics.alerts and topics.drift
    worker = Worker(settings)
    metrics = worker.metrics.registry
    thread = threading.Thread(target=worker.run, kwargs={"timeout_s": 240}, daemon=True)
    thread.start()
    try:
        first = produce_payments(settings, EVENTS, seed=1)
        produce_values(settings, POISON)
        wait_for(lambda: worker.stats.scored == EVENTS and worker.stats.dead_lettered == len(POISON), "v1 to score")

        client = SchemaRegistryClient({"url": schema_registry.url})
        scored_subject = subject(topics.scored)
        client.set_compatibility(scored_subject, "NONE")
        conflicting_id = client.register_schema(scored_subject, Schema(json.dumps(CONFLICTING), "AVRO"))
        client.set_compatibility(scored_subject, "BACKWARD")
        with caplog.at_level(logging.ERROR, logger="streamer.lifecycle"):
            drop_version(models, 1, 2)
            wait_for(lambda: metrics.get_sample_value("streamer_model_versions_refused_total") == 1, "v2 refused")
        second = produce_payments(settings, EVENTS, seed=2)
        wait_for(lambda: worker.stats.scored == 2 * EVENTS, "v1 to score on")
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()

    brokers = str(settings.admin_config()["bootstrap.servers"])
    scored = read_topic(brokers, topics.scored, 2 * EVENTS)
    alerts = read_topic(brokers, topics.alerts, 2 * EVENTS)
    letters = read_topic(brokers, topics.dlq, len(POISON))
    windows = read_topic(brokers, topics.drift, 1)  # the drain closes the open window
    outputs = (topics.scored, topics.alerts, topics.dlq, topics.drift)
    assert set(schema_registry.subjects) == {subject(t) for t in outputs}
    (scored_id,) = ids(scored)
    assert ids(alerts) == {scored_id} and conflicting_id != scored_id  # the id registered at start, still

    records = decoded(schema_registry, topics.scored, scored)
    assert sorted(r["event_id"] for r in records) == sorted([*first.columns["event_id"], *second.columns["event_id"]])
    assert {r["model_version"] for r in records} == {1}  # v2 never served
    assert len(alerts) == sum(r["alert"] for r in records) == 2 * EVENTS
    assert sorted(r["original_value"] for r in decoded(schema_registry, topics.dlq, letters)) == sorted(POISON)
    assert all(w["worker_ids"] == [settings.worker_id] for w in decoded(schema_registry, topics.drift, windows))

    (line,) = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "model_refused"]
    assert line == (
        f"refused model version 2: model fraud v2: its output schema for {topics.scored} is incompatible with "
        f"subject {scored_subject} (BACKWARD compatibility); evolve schemas.scored compatibly (new fields need "
        "defaults) or change the subject's compatibility level; v1 keeps serving"
    )


def test_a_first_version_the_subject_would_not_take_stops_start_up(
    make_settings: SettingsFactory, schema_registry: StandInRegistry
) -> None:
    settings = framed_settings(make_settings, schema_registry.url)
    schema_registry.register(subject(settings.topics.scored), json.dumps(CONFLICTING))
    with pytest.raises(Fatal, match=rf"^model fraud v1: its output schema for {settings.topics.scored} is incompat"):
        Worker(settings).run(timeout_s=60)


def test_an_unreachable_registry_stops_run_with_exit_2_and_one_line(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = framed_settings(make_settings, f"http://127.0.0.1:{free_port()}")
    line = fails_with(write_config(settings, tmp_path / "c.yaml"))
    assert line == (
        "streamer: schemas.registry_url: the Schema Registry does not answer (ConnectError); start it or fix the "
        "URL, or set schemas.output_framing: plain"
    )
