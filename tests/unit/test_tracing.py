"""streamer.tracing: W3C context read from input headers, a linked batch span, child contexts for
outputs; off by default. Spans are captured with the SDK's in-memory exporter."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamer.records import EventBatch, RecordHeaders
from streamer.tracing import MAX_LINKS, Tracing, enabled_by, parent_context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE_ID, span_id: str = SPAN_ID) -> RecordHeaders:
    return [("traceparent", f"00-{trace_id}-{span_id}-01".encode()), ("other", b"x")]


def header(headers: list[tuple[str, object]] | None, name: str) -> str:
    assert headers is not None
    value = dict(headers)[name]
    assert isinstance(value, bytes)
    return value.decode()


def events_with(headers: list[RecordHeaders | None]) -> EventBatch:
    n = len(headers)
    return EventBatch({}, np.zeros(n, np.int32), np.arange(n, dtype=np.int64), [None] * n, None, headers)


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exported: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return Tracing(provider)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(name)]


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_follows_the_otel_environment(environ: dict[str, str], on: bool) -> None:
    assert enabled_by(environ) is on
    assert Tracing.from_env(environ).enabled is on


def test_an_unknown_exporter_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        Tracing.from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_parent_context_reads_traceparent_and_ignores_what_is_not_one() -> None:
    context = parent_context(traceparent())
    assert context is not None
    assert parent_context(None) is None
    assert parent_context([("other", b"x")]) is None
    assert parent_context([("traceparent", b"00-not-a-trace-01")]) is None
    assert parent_context([("traceparent", f"00-{'0' * 32}-{SPAN_ID}-01".encode())]) is None  # all-zero id


def test_off_adds_nothing(exported: InMemorySpanExporter) -> None:
    off = Tracing(None)
    traced = off.batch(events_with([traceparent()]), "payments")
    traced.stage("infer")
    assert traced.headers(events_with([traceparent()])) == [None]
    traced.end()
    assert off.dead_letter_headers(traceparent(), "PoisonRecord", "bad") == []
    assert not off.enabled


def test_a_traced_event_output_continues_its_trace_under_a_linked_batch_span(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    events = events_with([traceparent(), None])
    traced = tracing.batch(events, "payments")
    traced.stage("infer")
    traced_headers, untraced_headers = traced.headers(events)
    traced.end()

    spans = exported.get_finished_spans()
    (batch,) = by_name(spans, "streamer batch")
    (child,) = by_name(spans, "streamer score")
    assert batch.kind is SpanKind.CONSUMER and batch.parent is None
    assert [format(link.context.trace_id, "032x") for link in batch.links] == [TRACE_ID]
    assert [e.name for e in batch.events] == ["infer"]
    assert format(child.context.trace_id, "032x") == TRACE_ID
    assert child.parent is not None and format(child.parent.span_id, "016x") == SPAN_ID
    assert [link.context.span_id for link in child.links] == [batch.context.span_id]
    # the output names the child span; an untraced event's output names the batch span
    assert header(traced_headers, "traceparent") == f"00-{TRACE_ID}-{format(child.context.span_id, '016x')}-01"
    batch_ids = f"{format(batch.context.trace_id, '032x')}-{format(batch.context.span_id, '016x')}"
    assert batch_ids in header(untraced_headers, "traceparent")


def test_an_unsampled_event_passes_its_own_context_on_and_records_no_span(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    unsampled: RecordHeaders = [("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-00".encode()), ("tracestate", b"v=1")]
    alone: RecordHeaders = unsampled[:1]
    among_others: RecordHeaders = [("other", b"x"), *unsampled]
    malformed: RecordHeaders = [("traceparent", f"00-{'0' * 32}-{SPAN_ID}-00".encode())]
    events = events_with([unsampled, alone, among_others, malformed])
    traced = tracing.batch(events, "payments")
    passed_on, passed_alone, passed_without_others, untraced = traced.headers(events)
    traced.end()
    assert passed_on == unsampled  # a sampled descendant downstream still joins the upstream trace
    assert passed_alone == alone
    assert passed_without_others == unsampled  # other headers are the input's, not the trace's
    (batch,) = exported.get_finished_spans()  # no child span for any event
    assert header(untraced, "traceparent").split("-")[1] == format(batch.context.trace_id, "032x")


def test_batch_links_are_bounded(tracing: Tracing, exported: InMemorySpanExporter) -> None:
    headers: list[RecordHeaders | None] = [traceparent(f"{i + 1:032x}") for i in range(MAX_LINKS + 10)]
    tracing.batch(events_with(headers), "payments").end()
    (batch,) = exported.get_finished_spans()
    assert len(batch.links) == MAX_LINKS
    assert batch.links[0].context.trace_id == 1


def test_tracestate_is_carried_to_the_child(tracing: Tracing) -> None:
    headers: RecordHeaders = [*traceparent(), ("tracestate", b"vendor=abc")]
    events = events_with([headers])
    traced = tracing.batch(events, "payments")
    (out,) = traced.headers(events)
    traced.end()
    assert header(out, "tracestate") == "vendor=abc"


def test_a_dead_letter_carries_an_error_child_of_its_input(tracing: Tracing, exported: InMemorySpanExporter) -> None:
    out = tracing.dead_letter_headers(traceparent(), "PoisonRecord", "amount is inf")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "amount is inf"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert header(out, "traceparent").startswith(f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}")
    assert tracing.dead_letter_headers(None, "PoisonRecord", "x") == []
