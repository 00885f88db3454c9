"""The drift side tap: scored batches in, closed windows out to the drift topic, Prometheus and
(optionally) TensorBoard. The arithmetic lives in the other `streamer.drift` modules; this joins
it to the outputs.

Windows are produced through the worker's own sink, so in exactly-once mode they belong to the
same transaction as the scores they describe, and a checkpoint flushes them like any output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, get_args

import numpy as np

from streamer.codec import AvroCodec
from streamer.drift.histograms import Baseline
from streamer.drift.metrics import WindowReport, evaluate
from streamer.drift.records import to_avro_record
from streamer.drift.settings import Metric
from streamer.drift.windows import SCORE, DriftMonitor, WindowCounts
from streamer.kafka.producer import KafkaSink
from streamer.metrics import DRIFT_STATUS_CODES, Metrics
from streamer.records import now_ms
from streamer.settings import Settings

log = logging.getLogger(__name__)

IDLE_ADVANCE_S = 1.0  # while input is idle, close event-time windows by the wall clock this often
# Counting a batch costs a fixed numpy pass per baseline feature, whatever its size: at a few
# thousand events a second (micro-batches of tens) that was 7% of the loop. Batches are held and
# counted together once this many events or this much time has gathered; windows are minutes
# long, so holding them a quarter of a second changes no count, only when a window is seen to close.
HOLD_EVENTS = 1024
HOLD_MS = 250


class DriftTap:
    def __init__(
        self,
        settings: Settings,
        baseline: Baseline,
        model_version: int,
        sink: KafkaSink,
        metrics: Metrics,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.baseline = baseline
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.monitor = DriftMonitor(baseline, settings.drift, settings.worker_id, model_version, clock)
        self.codec = AvroCodec(settings.schemas.drift)
        self._left_out = {"late": 0, "future": 0}
        self._last_advance_ms = clock()
        self._needed = [name for name in baseline.features if name != SCORE]
        self._held: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
        self._held_events = 0
        self._held_since_ms = 0
        self._summaries: Any = None
        if settings.drift.tensorboard_dir is not None:
            import tensorflow as tf  # the worker has it loaded already; the pure drift module does not

            self._summaries = tf.summary.create_file_writer(str(settings.drift.tensorboard_dir))

    def observe(self, columns: Mapping[str, np.ndarray], scores: np.ndarray, event_time_ms: np.ndarray) -> None:
        """Hold one scored batch; count what is held once HOLD_EVENTS or HOLD_MS have gathered."""
        now = self.clock()
        if not self._held:
            self._held_since_ms = now
        self._held.append(({name: columns[name] for name in self._needed if name in columns}, scores, event_time_ms))
        self._held_events += len(scores)
        if self._held_events >= HOLD_EVENTS or now - self._held_since_ms >= HOLD_MS:
            self._count_held()

    def _count_held(self) -> None:
        if not self._held:
            return
        held, self._held, self._held_events = self._held, [], 0
        names = held[0][0].keys()
        columns = {name: np.concatenate([batch[name] for batch, _, _ in held]) for name in names}
        scores = np.concatenate([scores for _, scores, _ in held])
        times = np.concatenate([times for _, _, times in held])
        self._publish(self.monitor.observe(columns, scores, times))
        self._last_advance_ms = self.clock()

    def idle(self) -> None:
        """No input: count what is held, and let the wall clock close event-time windows, so the
        last ones are not held back until the next event arrives."""
        self._count_held()
        now = self.clock()
        if now - self._last_advance_ms >= IDLE_ADVANCE_S * 1000:
            self._last_advance_ms = now
            self._publish(self.monitor.close_idle(now))

    def flush(self) -> None:
        """What is held counted, then every open window, complete or not (shutdown, model swap);
        other workers' counts of the same event-time window merge with it downstream."""
        self._count_held()
        self._publish(self.monitor.flush())

    def _publish(self, windows: list[WindowCounts]) -> None:
        self._count_left_out()
        report = None
        for window in windows:
            report = evaluate(window, self.baseline, self.settings.drift)
            self.metrics.drift_windows.labels(report.status).inc()
            topic = self.settings.topics.drift
            if topic:
                key = f"{window.kind}:{window.start_ms}".encode()  # a window's records share a partition
                self.sink.produce(topic, key, self.codec.encode_one(to_avro_record(report)))
            if self._summaries is not None:
                self._summarize(report)
            alerting = sorted(n for n, f in report.features.items() if f.status == "alert")
            level = {"alert": logging.WARNING, "warn": logging.INFO}.get(report.status, logging.DEBUG)
            log.log(  # every window is on the drift topic and in the gauges: log the ones that drift
                level,
                "drift window [%d, %d): %d events, %s%s",
                window.start_ms,
                window.end_ms,
                window.events,
                report.status,
                f" ({', '.join(alerting)})" if alerting else "",
                extra={"event": "drift_window", "status": report.status, "drifted": alerting},
            )
        if report is not None:  # gauges show the latest window: a replay closes several per batch
            self._export(report)

    @staticmethod
    def _values(report: WindowReport) -> list[tuple[str, Metric, float]]:
        return [
            (name, metric, value)
            for name, drift in report.features.items()
            for metric in get_args(Metric)
            if (value := drift.metric(metric)) is not None
        ]

    def _export(self, report: WindowReport) -> None:
        for name, drift in report.features.items():
            self.metrics.drift_status.labels(name).set(DRIFT_STATUS_CODES[drift.status])
        for name, metric, value in self._values(report):
            self.metrics.drift_value.labels(name, metric).set(value)

    def _summarize(self, report: WindowReport) -> None:
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import DATA_CLASS_SCALAR, SummaryMetadata

        # tf.summary.scalar needs the tensorboard package; this is what it writes, without it
        metadata = SummaryMetadata(data_class=DATA_CLASS_SCALAR)
        metadata.plugin_data.plugin_name = "scalars"
        with self._summaries.as_default(step=report.window.start_ms // 1000):
            for name, metric, value in self._values(report):
                tf.summary.write(f"drift/{name}/{metric}", tf.constant(value, tf.float32), metadata=metadata)
        self._summaries.flush()

    def _count_left_out(self) -> None:
        for reason, total in (("late", self.monitor.late_events), ("future", self.monitor.future_events)):
            if total > self._left_out[reason]:
                self.metrics.drift_events_left_out.labels(reason).inc(total - self._left_out[reason])
                self._left_out[reason] = total
