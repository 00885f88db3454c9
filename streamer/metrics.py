"""Every Prometheus object of the worker, declared in one place, on a registry passed in.

Names follow Prometheus practice: `streamer_` prefix, base units, `_total` for counters,
`_seconds` for durations, and no per-entity labels (partition is the finest label).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.context_managers import Timer
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streamer.errors import Fatal

DRIFT_STATUS_CODES = {"insufficient": -1, "ok": 0, "warn": 1, "alert": 2}
BATCH_SIZE_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BatchHistogram(Collector):
    """A Prometheus histogram fed a micro-batch of observations at once: one numpy binning per
    batch. `Histogram.observe` per event took 9% of the worker's time at 30k events/s."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = np.array(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()  # scrapes read from the health server's threads
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        # Bucket `le` is inclusive: a value equal to a bound belongs to that bound's bucket.
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        bounds = [*(str(bound) for bound in self._bounds.tolist()), "+Inf"]
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=list(zip(bounds, cumulative, strict=True)), sum_value=total
        )


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_consumed: Counter
    events_scored: Counter
    events_dead_lettered: Counter
    dead_letters_truncated: Counter
    dead_letters_failed: Counter
    outputs_refused: Counter
    alerts: Counter
    batches: Counter
    batch_size: Histogram
    latency_target_missed: Counter
    stage_seconds: Histogram
    end_to_end_seconds: BatchHistogram
    consumer_lag: Gauge
    cache_hits: Counter
    cache_misses: Counter
    features_degraded: Counter
    feature_updates_skipped: Counter
    feature_breaker_open: Gauge
    retries: Counter
    model_info: Gauge
    model_swaps: Counter
    model_refused: Counter
    model_swap_gap: Gauge
    heap_settle: Gauge
    drift_value: Gauge
    drift_status: Gauge
    drift_windows: Counter
    drift_events_left_out: Counter
    quality_scores_written: Counter
    quality_scores_dropped: Counter
    quality_labels: Counter
    quality_labelled: Counter
    quality_value: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """A fresh registry by default, so two workers in one process (tests) never collide."""
        r = CollectorRegistry() if registry is None else registry
        return cls(
            registry=r,
            events_consumed=Counter("streamer_events_consumed", "Input records polled.", registry=r),
            events_scored=Counter("streamer_events_scored", "Events scored and produced.", registry=r),
            events_dead_lettered=Counter(
                "streamer_events_dead_lettered", "Records sent to the DLQ.", ["error_class"], registry=r
            ),
            dead_letters_truncated=Counter(
                "streamer_dead_letters_truncated",
                "Dead letters whose original bytes did not fit the DLQ's size limit: a prefix, its size and sha256.",
                registry=r,
            ),
            dead_letters_failed=Counter(
                "streamer_dead_letters_failed",
                "Dead letters the broker refused for good (counted, logged and skipped: the partition moves on).",
                ["error"],
                registry=r,
            ),
            outputs_refused=Counter(
                "streamer_outputs_refused",
                "Output records the broker or producer refused for good (too large, invalid); each becomes a "
                "dead letter.",
                ["topic", "error"],
                registry=r,
            ),
            alerts=Counter(
                "streamer_alerts", "Records decision rules (outputs.rules) sent to their topics.", registry=r
            ),
            batches=Counter("streamer_batches", "Micro-batches scored.", registry=r),
            batch_size=Histogram(
                "streamer_batch_size",
                "Events per micro-batch (before padding).",
                buckets=BATCH_SIZE_BUCKETS,
                registry=r,
            ),
            latency_target_missed=Counter(
                "streamer_latency_target_missed",
                "Batches whose oldest event spent longer than batching.target_latency_ms in the worker.",
                registry=r,
            ),
            stage_seconds=Histogram(
                "streamer_stage_seconds",
                "Time per batch in each stage.",
                ["stage"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            end_to_end_seconds=BatchHistogram(
                "streamer_end_to_end_seconds", "Event time to scored-output production.", LATENCY_BUCKETS, r
            ),
            consumer_lag=Gauge(
                "streamer_consumer_lag",
                "Messages behind the high watermark, per assigned partition.",
                ["topic", "partition"],
                registry=r,
            ),
            cache_hits=Counter("streamer_feature_cache_hits", "Entity feature values found in Redis.", registry=r),
            cache_misses=Counter(
                "streamer_feature_cache_misses", "Entity feature values absent: defaults used.", registry=r
            ),
            features_degraded=Counter(
                "streamer_features_degraded_events", "Events scored with default features (Redis down).", registry=r
            ),
            feature_updates_skipped=Counter(
                "streamer_feature_updates_skipped", "Aggregate updates not applied while Redis was down.", registry=r
            ),
            feature_breaker_open=Gauge(
                "streamer_feature_breaker_open", "1 while the Redis circuit breaker is open.", registry=r
            ),
            retries=Counter("streamer_retries", "Retries of transient I/O failures.", ["operation"], registry=r),
            model_info=Gauge(
                "streamer_model_info",
                "Model versions loaded (value 1): role primary decides, candidate takes canary and shadow traffic.",
                ["name", "version", "device", "role"],
                registry=r,
            ),
            model_swaps=Counter("streamer_model_swaps", "Serving model sets swapped in between batches.", registry=r),
            model_refused=Counter(
                "streamer_model_versions_refused",
                "Model versions refused (tampered, unloadable, failed warm-up).",
                registry=r,
            ),
            model_swap_gap=Gauge(
                "streamer_model_swap_gap_seconds",
                "At the last swap: from the end of the last batch before it to the end of the first after it.",
                registry=r,
            ),
            heap_settle=Gauge(
                "streamer_heap_settle_seconds",
                "The loop's pause at the last heap settle (a full collection, then freeze): after start-up and "
                "after the first batch of each model swap.",
                registry=r,
            ),
            drift_value=Gauge(
                "streamer_drift_value",
                "The latest closed window's drift metric against the training baseline, per column.",
                ["feature", "metric"],
                registry=r,
            ),
            drift_status=Gauge(
                "streamer_drift_status",
                "The latest closed window's verdict per column: -1 insufficient, 0 ok, 1 warn, 2 alert.",
                ["feature"],
                registry=r,
            ),
            drift_windows=Counter(
                "streamer_drift_windows", "Drift windows closed, by verdict.", ["status"], registry=r
            ),
            drift_events_left_out=Counter(
                "streamer_drift_events_left_out",
                "Events not counted in a drift window: late (window closed) or future (clock skew).",
                ["reason"],
                registry=r,
            ),
            quality_scores_written=Counter(
                "streamer_quality_scores_written",
                "Scores written to Redis for their labels to find (quality configured).",
                registry=r,
            ),
            quality_scores_dropped=Counter(
                "streamer_quality_scores_dropped",
                "Scores dropped unwritten while Redis was away past quality.max_pending: their labels will be unknown.",
                registry=r,
            ),
            quality_labels=Counter(
                "streamer_quality_labels",
                "Labels read by `streamer quality run`: joined to their score, unknown (no score: never scored, "
                "or expired), dead_lettered (malformed).",
                ["outcome"],
                registry=r,
            ),
            quality_labelled=Counter(
                "streamer_quality_labelled_events",
                "Joined labels by the deciding model version, the label and whether the score alerted: the "
                "confusion matrix, summable across consumers (precision = label 1 alert true / alert true).",
                ["model_version", "label", "alert"],
                registry=r,
            ),
            quality_value=Gauge(
                "streamer_quality_value",
                "This consumer's figures for the window of event time it updated last, per model version: "
                "base_rate, precision, recall, auc, calibration_error (the group's view: the quality topic).",
                ["model_version", "metric"],
                registry=r,
            ),
        )

    def time_stage(self, stage: str) -> Timer:
        """`with metrics.time_stage("infer"): ...` observes the block's duration."""
        return self.stage_seconds.labels(stage).time()


@dataclass(frozen=True)
class RunStats:
    consumed: int
    scored: int
    alerts: int
    dead_lettered: int
    batches: int

    @classmethod
    def of(cls, metrics: Metrics) -> RunStats:
        """Read back from the metrics: the counters are the one record of what happened."""

        def total(name: str) -> int:
            samples = (sample for family in metrics.registry.collect() for sample in family.samples)
            return int(sum(sample.value for sample in samples if sample.name == f"{name}_total"))

        return cls(
            consumed=total("streamer_events_consumed"),
            scored=total("streamer_events_scored"),
            alerts=total("streamer_alerts"),
            dead_lettered=total("streamer_events_dead_lettered"),
            batches=total("streamer_batches"),
        )


Readiness = Callable[[], tuple[bool, str]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds are not events of note."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class HealthServer:
    """`/metrics` (Prometheus), `/healthz` (the process answers) and `/readyz` (partitions
    assigned, model warm, producer healthy) on one port, served from a daemon thread."""

    def __init__(self, metrics: Metrics, host: str, port: int, readiness: Readiness) -> None:
        self.readiness = readiness
        self._metrics_app = make_wsgi_app(metrics.registry)
        try:
            self._server = make_server(host, port, self._app, _ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:  # a port taken, an address not on this host, a name that does not resolve
            raise Fatal(
                f"metrics: cannot listen on {host}:{port} ({exc.strerror or exc}); free the port or fix "
                "metrics.host / metrics.port (port 0 picks a free one)"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            ready, reason = self.readiness()
            start_response("200 OK" if ready else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"{reason}\n".encode()]
        return self._metrics_app(environ, start_response)
