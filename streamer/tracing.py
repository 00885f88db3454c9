"""W3C trace context through the worker, with OpenTelemetry.

An input record's `traceparent`/`tracestate` headers name the span that produced it. Each batch
gets one span of its own (a new trace: a batch mixes many traces), linked to the first
`MAX_LINKS` event contexts it holds, with its stages as span events. Each traced event gets a
short child span that continues its trace, and that span's context goes into the headers of its
scored, alert and dead-letter records, so a decision can be followed from the upstream
service to whatever acts on it. Outputs of untraced events carry the batch span's context.

Off unless the standard OTEL_* environment asks for an exporter (see `enabled_by`); off, the
worker never reads input headers and every call here returns at its first line, so the cost is a
few attribute checks per batch. The SDK is imported only when tracing is on.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from streamer.kafka.producer import Headers
from streamer.records import RecordHeaders

if TYPE_CHECKING:
    from streamer.records import EventBatch

TRACE_HEADERS = ("traceparent", "tracestate")
MAX_LINKS = 32  # links per batch span: enough to find a batch from a trace, bounded per batch
_PROPAGATOR = TraceContextTextMapPropagator()
# A valid version-00 traceparent whose flags leave "sampled" unset (W3C: all-zero ids are invalid).
_UNSAMPLED = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f][02468ace]\Z")
_SCOPE = "streamer"


def enabled_by(environ: Mapping[str, str]) -> bool:
    """The OTEL_* convention: OTEL_SDK_DISABLED=true wins; OTEL_TRACES_EXPORTER names the
    exporter ("none" = off); otherwise an OTLP endpoint turns the OTLP exporter on."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def sdk_provider(environ: Mapping[str, str]) -> TracerProvider:
    """An SDK provider configured by OTEL_* (service name, resource attributes, sampler, batch
    processor limits) with the exporter OTEL_TRACES_EXPORTER names: otlp (HTTP/protobuf, the
    default) or console."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = SdkTracerProvider(resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", _SCOPE)}))
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    for name in names:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, ...
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: streamer ships the otlp and console exporters")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Tracing:
    """The worker's tracer; `Tracing(None)` (the default) is off."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self.tracer: Tracer | None = None if provider is None else provider.get_tracer(_SCOPE)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tracing:
        environ = os.environ if environ is None else environ
        return cls(sdk_provider(environ) if enabled_by(environ) else None)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def batch(self, events: EventBatch, topic: str) -> BatchTrace:
        """Start the batch's span; `BatchTrace.end()` closes it and the events' child spans."""
        if self.tracer is None or events.headers is None:
            return _OFF
        return BatchTrace(self.tracer, events.headers, topic)

    def dead_letter_headers(self, headers: RecordHeaders | None, error_class: str, reason: str) -> Headers:
        """A child of the input's context for its dead letter, ended at once with an error status."""
        parent = parent_context(headers) if self.tracer is not None else None
        if self.tracer is None or parent is None:
            return []
        span = self.tracer.start_span("streamer dead_letter", parent, SpanKind.PRODUCER)
        span.set_status(StatusCode.ERROR, reason)
        span.set_attribute("streamer.error.class", error_class)
        span.end()
        return inject(span)

    def shutdown(self) -> None:
        """Export what is buffered; the SDK provider's shutdown does, the API's has none."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


class BatchTrace:
    """One batch's span, and the child spans of its traced events, which end with it."""

    def __init__(self, tracer: Tracer, headers: list[RecordHeaders | None], topic: str) -> None:
        self.tracer = tracer
        self.started_ns = time.time_ns()
        links: list[Link] = []
        for record_headers in headers:
            parent = parent_context(record_headers)
            if parent is not None:
                links.append(Link(trace.get_current_span(parent).get_span_context()))
                if len(links) == MAX_LINKS:
                    break
        attributes: Attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(headers),
        }
        self.span: Span = tracer.start_span(
            f"streamer batch {topic}", Context(), SpanKind.CONSUMER, attributes, links, self.started_ns
        )
        self._link = [Link(self.span.get_span_context())]
        self._batch_headers = inject(self.span)
        self._children: list[Span] = []

    def stage(self, name: str) -> None:
        """A stage ended: a span event at this moment."""
        self.span.add_event(name)

    def headers(self, events: EventBatch) -> list[Headers | None]:
        """Trace headers for the outputs of each row of `events`: a child span of the row's own
        context, linked to the batch span; the input's own headers when its trace is not
        sampled (a child would record nothing, and the upstream's context is what a sampled
        descendant needs); or the batch span's context for an untraced event.

        One pass per batch, and in the common shape (one traceparent header, not sampled, as
        under an upstream ratio sampler) the record's own header list is passed on as it is:
        this runs for every event, so it must cost about as little as reading the header."""
        inputs = events.headers
        if inputs is None:
            return [self._batch_headers] * len(events)
        unsampled = _UNSAMPLED.match
        out: list[Headers | None] = []
        for record_headers in inputs:
            if not record_headers:
                out.append(self._batch_headers)
                continue
            name, value = record_headers[0]
            if len(record_headers) == 1 and name == "traceparent" and value is not None and unsampled(value):
                out.append(record_headers)  # type: ignore[arg-type]  # (name, bytes) pairs are headers
            else:
                out.append(self._row_headers(record_headers))
        return out

    def _row_headers(self, record_headers: RecordHeaders) -> Headers:
        unsampled = unsampled_trace(record_headers)
        if unsampled is not None:
            return unsampled
        parent = parent_context(record_headers)
        if parent is None:
            return self._batch_headers
        child = self.tracer.start_span(
            "streamer score", parent, SpanKind.PRODUCER, links=self._link, start_time=self.started_ns
        )
        self._children.append(child)
        return inject(child)

    def end(self) -> None:
        for child in self._children:
            child.end()
        self.span.end()


class _Off(BatchTrace):
    """The batch trace when tracing is off: nothing to record, no headers to add."""

    def __init__(self) -> None:
        self.span = NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)

    def stage(self, name: str) -> None:
        return None

    def headers(self, events: EventBatch) -> list[Headers | None]:
        return [None] * len(events)

    def end(self) -> None:
        return None


_OFF = _Off()


def parent_context(headers: Iterable[tuple[str, bytes | None]] | None) -> Context | None:
    """The context named by a record's traceparent (and tracestate) headers, None if it names none
    or a malformed one (W3C: a bad traceparent is ignored, not an error)."""
    if not headers:
        return None
    carrier = {name: value.decode("latin-1") for name, value in headers if name in TRACE_HEADERS and value}
    if "traceparent" not in carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def unsampled_trace(headers: RecordHeaders | None) -> Headers | None:
    """The record's trace headers if its traceparent is well formed and not sampled, else None.
    Read from the header's bytes: the common case under a ratio sampler costs no parsing."""
    if not headers:
        return None
    parent = next((value for name, value in headers if name == "traceparent"), None)
    if parent is None or _UNSAMPLED.match(parent) is None:
        return None
    return [(name, value) for name, value in headers if name in TRACE_HEADERS and value]


def inject(span: Span) -> Headers:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return [(name, value.encode()) for name, value in carrier.items()]
