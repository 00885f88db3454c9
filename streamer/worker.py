"""The loop that joins the stages: consume → decode → batch → features → infer → encode → produce
→ commit.

One thread owns the loop, so rebalance callbacks (which run inside `poll`) never race a batch.
The one exception is the Redis round trip of the feature stage when input is backed up: it
runs on a helper thread while the loop finishes the batch before (infer, encode, produce),
since waiting on a socket releases the GIL. Below that rate there is no batch before to overlap
with, and the round trip runs in the loop: two thread hand-offs less per batch, each a wait for
a core on a busy machine. Batches go through Redis in order, one at a time, either way.
SIGTERM and SIGINT set a flag; the loop then scores what it holds, checkpoints, and closes the
consumer last (a commit after close would be lost).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from streamer import heap, pipeline
from streamer.admission import Admission
from streamer.batcher import MicroBatcher
from streamer.codec import AvroCodec, input_codec
from streamer.contract import check_entity_features, check_event_contract
from streamer.dead_letters import DeadLetterWriter
from streamer.device import label as device_label
from streamer.device import serving_device
from streamer.drift.tap import DriftTap
from streamer.errors import OutputsLost, Retriable
from streamer.features import Enrichment, FeatureStore
from streamer.kafka.admin import record_limits
from streamer.kafka.consumer import KafkaSource
from streamer.kafka.delivery import checkpoint_for
from streamer.kafka.producer import KafkaSink, Refusal
from streamer.lifecycle import ModelLifecycle, Serving
from streamer.metrics import HealthServer, Metrics, RunStats
from streamer.model import LoadedModel
from streamer.outputs import Outputs, written_schemas
from streamer.quality.scores import ScoreLog
from streamer.records import DeadLetter, EventBatch, Rejection, now_ms
from streamer.registry import SchemaRegistry
from streamer.settings import Settings
from streamer.tracing import Tracing

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.1


class Worker:
    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        config_path: Path | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """`config_path`: where `settings` came from; its model section is re-read on SIGHUP and
        when the file changes (version pins, canary and shadow shares). `tracing`: by default
        from the OTEL_* environment (off unless it names an exporter)."""
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.input_codec = input_codec(settings)
        self.outputs = Outputs(settings, self.input_codec)
        check_event_contract(settings.event, self.input_codec, self.outputs.scored_codec)
        self.registry = SchemaRegistry.of(settings.schemas)  # outputs framed; no call until start
        self.dlq_codec = AvroCodec(settings.schemas.dlq)
        batching = settings.batching
        self.metrics = Metrics.create()
        target_s = None if batching.target_latency_ms is None else batching.target_latency_ms / 1000
        missed = self.metrics.latency_target_missed.inc
        self.batcher = MicroBatcher(batching.max_batch_size, batching.max_wait_ms / 1000, clock, target_s, missed)
        self.source = KafkaSource(
            settings.consumer_config(), settings.topics.input, self._on_revoke, self._on_lost, self.metrics
        )
        self.sink = KafkaSink(settings.producer_config(), self.metrics, settings.delivery.mode == "exactly_once")
        self.tracing = tracing or Tracing.from_env()
        self.source.capture_headers = self.tracing.enabled
        delivery = settings.delivery
        self.dead_letters = DeadLetterWriter(
            settings.topics.dlq,
            self.dlq_codec,
            self.sink,
            self.metrics,
            settings.worker_id,
            delivery.refused_records == "stop",
            self.tracing,
        )
        self.checkpoint = checkpoint_for(delivery, self.source, self.sink, self.dead_letters.refused_outputs, clock)
        self.admission = Admission(self.input_codec, self.outputs, self.registry)
        self.lifecycle: ModelLifecycle | None = None
        self._entity_fields: tuple[str, ...] = ()  # every id that keys state: event.missing_entity applies
        self.features: FeatureStore | None = None
        self.health: HealthServer | None = None
        self.drift: DriftTap | None = None
        quality = settings.quality  # scores wait in Redis for their labels: written with the state
        self.scores = ScoreLog(settings.features.key_prefix, quality, self.metrics) if quality else None
        self._warm = False
        self._paused = False
        self._rewinding = False  # a rewind waits for the broker: input held, records polled meanwhile dropped
        self._completed = 0  # events scored or dead-lettered: bounds `run(max_events=…)` cheaply
        self._last_batch_end: float | None = None
        self._last_poll_end: float | None = None
        self._swapped_after: float | None = None  # end of the last batch before a swap, until the next one
        self._stop = threading.Event()
        self._enricher = ThreadPoolExecutor(1, thread_name_prefix="features")  # one: aggregates apply in order
        self._in_flight: tuple[EventBatch, Future[Enrichment]] | None = None  # features loading

    @property
    def model(self) -> LoadedModel:
        """The primary: the model whose spec and baseline the features and drift taps follow."""
        assert self.lifecycle is not None and self.lifecycle.serving is not None, "start() first"
        return self.lifecycle.serving.primary

    def start(self) -> None:
        """Everything that can refuse to start does so here, before the group sees this member."""
        self.admission.device = serving_device(self.settings.model)
        self.lifecycle = ModelLifecycle(
            self.settings.model,
            self.admission.load,
            self.settings.batching.allowed_batch_sizes,
            self.config_path,
            self._export_serving,
            lambda version, reason: self.metrics.model_refused.inc(),
        )
        model = self.lifecycle.start().primary
        event = self.settings.event
        self._entity_fields = pipeline.entity_fields(event.entity_field, model)
        partition_key = self.settings.features.partition_key or event.entity_field
        self.features = FeatureStore(
            self.settings.features,
            model.spec,
            self.metrics,
            event.time_field,
            partition_key,
            self.clock,
            scores=self.scores,
        )
        self.features.check_schema(self.input_codec.field_types)
        check_entity_features(model.spec, self.input_codec)
        self.features.start()
        self.checkpoint.state = self.features  # snapshots are written before each commit
        if self.settings.drift.enabled:
            self.drift = self._drift_tap(model)
        self._warm = True
        settings = self.settings
        if self.registry is not None:
            self.sink.frames = self.registry.frames(written_schemas(settings))
        self.source.start()  # first: it names an unreachable broker or a missing topic
        limits = record_limits(
            settings.admin_config(),
            settings.producer_config(),
            settings.consumer_config(),
            settings.topics.input,
            [t for t in settings.topic_names() if t != settings.topics.input],
        )
        self.dead_letters.start(limits[settings.topics.dlq])
        self.sink.start(settings.delivery.flush_timeout_s, limits)
        self._settle_heap()

    def _drift_tap(self, model: LoadedModel) -> DriftTap | None:
        baseline = self.admission.drift_baseline(model)
        return None if baseline is None else DriftTap(self.settings, baseline, model.version, self.sink, self.metrics)

    def _export_serving(self, serving: Serving) -> None:
        info = self.metrics.model_info
        info.clear()
        where = device_label(self.admission.device)
        info.labels(serving.primary.name, str(serving.primary.version), where, "primary").set(1)
        if serving.candidate is not None:
            info.labels(serving.candidate.name, str(serving.candidate.version), where, "candidate").set(1)

    def readiness(self) -> tuple[bool, str]:
        """Ready = model warm, partitions assigned, producer without a fatal error."""
        if not self._warm:
            return False, "model loading"
        if not self.source.assigned:
            return False, "no partitions assigned"
        if not self.sink.healthy:
            return False, "producer failed"
        return True, f"ready: partitions {sorted(self.source.assigned)}"

    def stop(self) -> None:
        self._stop.set()

    def _reload(self) -> None:
        if self.lifecycle is not None:
            self.lifecycle.request_reload()

    def run(self, max_events: int | None = None, timeout_s: float | None = None) -> RunStats:
        """Serve until stopped, or until `max_events` are done or `timeout_s` passes (for tests)."""
        previous_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous_handlers[signum] = signal.signal(signum, lambda *_: self.stop())
            previous_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: self._reload())
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        served = self.settings.metrics
        if served.enabled:
            self.health = HealthServer(self.metrics, served.host, served.port, self.readiness)
            self.health.start()
            log.info("serving /metrics, /healthz, /readyz on %s:%d", served.host, self.health.port)
        log.info("starting worker %s", self.settings.worker_id, extra={"event": "start"})
        try:
            self.start()
            while not self._stop.is_set():
                self._step()
                if (max_events is not None and self._completed >= max_events) or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    break
            self._drain()
        finally:
            if self.lifecycle is not None:
                self.lifecycle.close()
            self._enricher.shutdown()
            self.source.close()
            self.sink.close(self.settings.delivery.flush_timeout_s)
            self.tracing.shutdown()
            if self.health is not None:
                self.health.stop()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            stats = self.stats
            log.info("stopped: %s", stats, extra={"event": "shutdown", **vars(stats)})
        return stats

    @property
    def stats(self) -> RunStats:
        return RunStats.of(self.metrics)

    def _step(self) -> None:
        if self._rewinding:
            self._recover()
            return
        # A batch loading its features was kept in flight because input was backed up: take what
        # has arrived without blocking, so the next batch can overlap it, or finish it below.
        wait = 0.0 if self._in_flight is not None else self.batcher.wait_s()
        # librdkafka's consume() returns when it has `room` messages or the timeout passes.
        with self.metrics.time_stage("poll"):
            # What reached the consumer while the loop was busy has been waiting since the last
            # poll returned (the consumer's queue is the batcher's queue, and TF Serving's timeout
            # counts from the enqueue): take it without blocking; its batch's clock started then,
            # so under load the loop goes straight on to it.
            timeout = 0.0 if wait is None else wait
            raw = self.source.poll(self.batcher.room(), timeout)
            waiting_since = self._last_poll_end if timeout == 0.0 else None
            if wait is None and not len(raw):  # idle: ask for one; its batch's clock starts on arrival
                raw = self.source.poll(1, IDLE_POLL_S)
                waiting_since = None
        self._last_poll_end = self.clock()
        if self._rewinding:  # a rebalance callback in that poll had to rewind: these precede the seek
            return
        if len(raw):
            self.metrics.events_consumed.inc(len(raw))
            with self.metrics.time_stage("decode"):
                decoded, dead = self.input_codec.decode(raw)
                assert self.lifecycle is not None and self.lifecycle.serving is not None
                events, refused = pipeline.admit(
                    decoded,
                    self._entity_fields,
                    self.settings.event.missing_entity,
                    pipeline.needed_inputs(self.lifecycle.serving),
                )
            self._dead_letter(dead + self.input_codec.dead_letters(decoded, refused, self.settings.topics.input))
            self.batcher.add(events, waiting_since)
        elif self.drift is not None and not len(self.batcher):
            self.drift.idle()
        self._swap_models()
        backed_up = False
        while len(self.batcher) and self.batcher.ready():
            batch = self.batcher.take()
            backed_up = len(batch) >= self.settings.batching.max_batch_size
            if backed_up or self._in_flight is not None:
                self._submit(batch)
            else:  # nothing to overlap the round trip with: no hand-off to the helper thread
                self._score_now(batch)
        if not backed_up:  # no next batch is coming at once: finish now, latency first
            self._finish_in_flight()
        self.sink.poll()
        self._apply_backpressure()
        if self.checkpoint.due():
            self._commit(whole=False)

    def _swap_models(self) -> None:
        """Between batches: take what the model watcher prepared (already loaded and warm)."""
        assert self.lifecycle is not None
        previous = self.lifecycle.serving
        swapped = self.lifecycle.swap_if_ready()
        if swapped is None or previous is None:
            return
        self.metrics.model_swaps.inc()
        self._swapped_after = self._last_batch_end
        primary = swapped.primary
        if primary.version != previous.primary.version and self.drift is not None:
            self.drift.flush()  # windows of one version are judged against that version's baseline
            self.drift = self._drift_tap(primary)
        candidate = swapped.candidate
        log.info(
            "serving model %s v%d%s",
            primary.name,
            primary.version,
            f", candidate v{candidate.version} (canary {swapped.canary_share:.0%}, shadow {swapped.shadow_share:.0%})"
            if candidate
            else "",
            extra={"event": "model_swap", "version": primary.version, "candidate": candidate and candidate.version},
        )

    def _apply_backpressure(self) -> None:
        """Pause input while too many outputs await acknowledgement (a slow or absent broker);
        polling goes on, so the member keeps its partitions and serves rebalances."""
        in_flight, limit = self.sink.in_flight(), self.settings.delivery.max_in_flight
        if not self._paused and in_flight > limit:
            self.source.pause()
            self._paused = True
            log.warning("paused input: %d outputs in flight", in_flight, extra={"event": "pause"})
        elif self._paused and in_flight <= limit // 2:
            self.source.resume()
            self._paused = False
            log.info("resumed input", extra={"event": "resume"})

    def _submit(self, events: EventBatch) -> None:
        """Start this batch's Redis round trip, and finish the batch before while it runs."""
        assert self.features is not None
        future = self._enricher.submit(self.features.enrich, events)
        self._finish_in_flight()
        self._in_flight = (events, future)

    def _score_now(self, events: EventBatch) -> None:
        """Features and scores in the loop: nothing is in flight (the state is the loop's)."""
        assert self.features is not None
        with self.metrics.time_stage("features"):
            enrichment = self.features.enrich(events)
        self._score(events, enrichment)

    def _finish_in_flight(self, without_partitions: list[int] | None = None) -> None:
        if self._in_flight is None:
            return
        events, future = self._in_flight
        self._in_flight = None
        with self.metrics.time_stage("features"):  # the wait the overlap did not hide
            enrichment = future.result()
        if without_partitions:
            keep = ~np.isin(events.partitions, without_partitions)
            if not keep.any():
                self.batcher.finished(measured=False)
                return
            events = events.take(keep)
            enrichment = Enrichment({n: c[keep] for n, c in enrichment.columns.items()}, enrichment.degraded[keep])
        self._score(events, enrichment)

    def _score_pending(self) -> None:
        while len(self.batcher):
            self._submit(self.batcher.take())
        self._finish_in_flight()

    def _score(self, events: EventBatch, enrichment: Enrichment) -> None:
        assert self.lifecycle is not None and self.lifecycle.serving is not None
        settings, metrics = self.settings, self.metrics
        traced = self.tracing.batch(events, settings.topics.input)
        with metrics.time_stage("infer"):
            scored, rejected = pipeline.score_batch(
                self.lifecycle.serving,
                events,
                settings.batching.allowed_batch_sizes,
                now_ms(),
                enrichment,
                settings.event.entity_field,
            )
        traced.stage("infer")
        if rejected:
            self._dead_letter(self.input_codec.dead_letters(events, rejected, settings.topics.input))
            events = scored.events
        with metrics.time_stage("encode"):
            values = self.outputs.encode_scored(scored)
        traced.stage("encode")
        with metrics.time_stage("produce"):
            scored_topic = settings.topics.scored
            routes = [(topic, holds.tolist()) for topic, holds in self.outputs.routes(scored)]
            too_large: list[int] = []
            outputs_headers = traced.headers(events)
            for row, (key, value, headers) in enumerate(zip(events.keys, values, outputs_headers, strict=True)):
                if not self.sink.produce(scored_topic, key, value, headers):
                    too_large.append(row)
                    continue
                for topic, holds in routes:
                    if holds[row] and not self.sink.produce(topic, key, value, headers):
                        self.dead_letters.refused_outputs([Refusal(topic, key, value, "MSG_SIZE_TOO_LARGE")])
        traced.end()
        # The side taps run once the outputs are with the producer: they add nothing to this
        # batch's latency, only to the next one's wait.
        time_field = settings.event.time_field
        if self.drift is not None:
            with metrics.time_stage("drift"):
                self.drift.observe(scored.events.columns, scored.scores, events.columns[time_field])
        produced: np.ndarray | slice = slice(None)
        if too_large:
            produced = np.isin(np.arange(len(events)), too_large, invert=True)
            self._dead_letter([self._refused_output(scored_topic, events, values, row) for row in too_large])
            events = events.take(produced)
        if self.scores is not None:
            self.scores.add(
                events.columns[settings.event.id_field],
                scored.scores[produced],
                scored.model_versions[produced],
                events.columns[time_field],
            )
        self.checkpoint.mark_processed(events.partitions, events.offsets)
        self._completed += len(events)
        metrics.events_scored.inc(len(events))
        metrics.alerts.inc(sum(sum(holds) for _, holds in routes))
        metrics.batches.inc()
        metrics.batch_size.observe(len(events))
        self._last_batch_end = self.clock()
        self.batcher.finished()
        metrics.end_to_end_seconds.observe_many((scored.scored_at_ms - events.columns[time_field]) / 1000)
        if self._swapped_after is not None:
            metrics.model_swap_gap.set(self._last_batch_end - self._swapped_after)
            self._swapped_after = None
            self._settle_heap()

    def _settle_heap(self) -> None:
        """`streamer.heap`: once started, and after the first batch a swap served, so the
        collection's pause (0.5 s measured, more on a loaded machine) delays neither the swap
        nor a rollback; it frees the versions the watcher dropped and freezes the new one."""
        seconds = heap.settle()
        self.metrics.heap_settle.set(seconds)
        log.info("heap settled in %.2f s", seconds, extra={"event": "heap_settle"})

    def _refused_output(self, topic: str, events: EventBatch, values: list[bytes], row: int) -> DeadLetter:
        """An event whose scored record is larger than `topic` takes: dead-lettered, not lost."""
        self.metrics.outputs_refused.labels(topic, "MSG_SIZE_TOO_LARGE").inc()
        reason = (
            f"its scored record ({len(values[row])} bytes) is larger than {topic} accepts ({self.sink.limits[topic]})"
        )
        return events.dead_letter(row, self.settings.topics.input, Rejection("OutputRefused", reason))

    def _dead_letter(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        self.dead_letters.write(dead)
        self.checkpoint.mark_processed(
            np.array([d.partition for d in dead], dtype=np.int32),
            np.array([d.offset for d in dead], dtype=np.int64),
        )
        self._completed += len(dead)

    def _commit(self, whole: bool = True) -> bool:
        """False when the checkpoint was deferred: what was produced since the last one is
        neither committed nor dropped yet. Not `whole`: one step of it, which does not wait for
        the broker where the delivery mode allows (`Checkpoint.advance`)."""
        if self.checkpoint.transactional:
            self._score_pending()
        else:  # its events are not in the batcher's pending floor, and it changes the entity state
            self._finish_in_flight()  # the checkpoint reads and marks (on this thread)
        checkpoint = self.checkpoint.commit if whole else self.checkpoint.advance
        try:
            with self.metrics.time_stage("commit"):
                checkpoint(self.batcher.lowest_pending_offsets())
        except OutputsLost as exc:
            log.warning("checkpoint failed, rewinding: %s", exc, extra={"event": "rewind"})
            self._rewind()
        except Retriable as exc:
            log.warning("checkpoint deferred: %s", exc)
            return False
        return True

    def _rewind(self) -> None:
        """Back to the last commit: abort (or replace) the producer, forget pending work and the
        entity state since (read again from the snapshot at the commit), seek."""
        if self._in_flight is not None:  # replayed from the last commit
            self._in_flight[1].result()
            self._in_flight = None
        self.batcher.clear()
        self._forget_state(sorted(self.source.assigned))
        if not self._paused:
            self.source.pause()
            self._paused = True  # resumed by the backpressure check once the rewind is done
        self._rewinding = True
        if self.checkpoint.rewind():
            self._seek()

    def _recover(self) -> None:
        """A step while a rewind waits for the broker: poll (rebalances are served, the member
        keeps its partitions; records are dropped, the seek reads them again), then try again."""
        self.source.poll(self.batcher.room(), IDLE_POLL_S)
        if self.checkpoint.rewound():
            self._seek()

    def _seek(self) -> None:
        """One bounded attempt at the seek back to the committed offsets."""
        try:
            self.source.rewind()
        except Retriable as exc:
            log.warning("rewind waits for the broker: %s", exc)
            return
        self._rewinding = False

    def _drain(self) -> None:
        if self._rewinding:  # nothing since the last commit is kept, and nothing can be produced
            return
        self._score_pending()
        if self.drift is not None:
            self.drift.flush()
        self._commit()

    def _on_revoke(self, partitions: list[int]) -> None:
        """Pending events of revoked partitions are dropped (the new owner replays them from the
        last commit); everything already produced is flushed and committed while still owned."""
        self._finish_in_flight()  # its partitions are still owned: its outputs go out and commit
        dropped = self.batcher.drop_partitions(partitions)
        if dropped:
            log.info("dropped %d pending events of revoked partitions", dropped)
        if not self._commit() and self.checkpoint.transactional:
            log.warning("checkpoint deferred at a revoke: aborting the transaction, which holds their outputs")
            self._rewind()
        self.checkpoint.forget(partitions)
        self._forget_state(partitions)

    def _on_lost(self, partitions: list[int]) -> None:
        """Lost partitions' new owner replays them from the last commit. In a transaction their
        outputs since then cannot be split from the others': the whole transaction is aborted
        and the partitions kept are replayed too."""
        if self.checkpoint.transactional:
            self._rewind()
        else:
            self._finish_in_flight(without_partitions=partitions)
            self.batcher.drop_partitions(partitions)
        self.checkpoint.forget(partitions)
        self._forget_state(partitions)

    def _forget_state(self, partitions: list[int]) -> None:
        """The next owner (maybe this member again) reads the state from the last snapshot."""
        if self.features is not None:
            self.features.forget(partitions)
