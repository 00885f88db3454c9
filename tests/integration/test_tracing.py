"""Trace context through the real broker: a traced payment's scored record (and a traced poison
record's dead letter) continue its trace; the exported batch span is linked to it."""

from __future__ import annotations

import numpy as np
from confluent_kafka import Producer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.tracing import Tracing
from streamer.worker import Worker
from tests.integration.conftest import SettingsFactory, read_topic

EVENTS = 200
TRACED = 7  # rows of the input that carry a traceparent


def trace_id(row: int) -> str:
    return f"{row + 1:032x}"


def test_traced_inputs_continue_their_trace_through_scores_and_dead_letters(make_settings: SettingsFactory) -> None:
    settings = make_settings(topics={"partitions": 1})
    columns, _ = synth_payments(EVENTS, np.random.default_rng(11), id_prefix="tr-")
    values = AvroCodec(settings.schemas.input).encode(rows_of(columns))
    poison_trace = f"{999:032x}"
    producer = Producer({**settings.admin_config(), "linger.ms": 5})
    for row, value in enumerate(values):
        headers = [("traceparent", f"00-{trace_id(row)}-{row + 1:016x}-01".encode())] if row == TRACED else None
        producer.produce(settings.topics.input, value, columns["card_id"][row].encode(), headers=headers)
    producer.produce(
        settings.topics.input, b"\xff not avro", headers=[("traceparent", f"00-{poison_trace}-{1:016x}-01")]
    )
    assert producer.flush(30) == 0
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))

    stats = Worker(settings, tracing=Tracing(provider)).run(max_events=EVENTS + 1, timeout_s=120)

    assert (stats.scored, stats.dead_lettered) == (EVENTS, 1)
    brokers = str(settings.admin_config()["bootstrap.servers"])
    scored_codec = AvroCodec(settings.schemas.scored)
    by_event = {
        scored_codec.decode_one(m.value)["event_id"]: m for m in read_topic(brokers, settings.topics.scored, EVENTS)
    }
    traced_out = by_event[columns["event_id"][TRACED]].headers["traceparent"].decode()
    _, out_trace, out_span, _ = traced_out.split("-")
    assert out_trace == trace_id(TRACED)  # continues the input's trace

    spans = exported.get_finished_spans()
    (child,) = [s for s in spans if s.name == "streamer score"]
    assert format(child.context.span_id, "016x") == out_span
    assert child.parent is not None and child.parent.span_id == TRACED + 1
    linked = [
        s
        for s in spans
        if s.name.startswith("streamer batch") and any(link.context.trace_id == int(out_trace, 16) for link in s.links)
    ]
    assert len(linked) == 1 and child.links[0].context.span_id == linked[0].context.span_id
    # untraced events' outputs name their batch span, so every output can be followed back
    untraced_out = by_event[columns["event_id"][0]].headers["traceparent"].decode()
    assert int(untraced_out.split("-")[1], 16) in {
        s.context.trace_id for s in spans if s.name.startswith("streamer batch")
    }

    (letter,) = read_topic(brokers, settings.topics.dlq, 1)
    assert letter.headers["traceparent"].decode().split("-")[1] == poison_trace
    (dead,) = [s for s in spans if s.name == "streamer dead_letter"]
    assert format(dead.context.trace_id, "032x") == poison_trace
