"""`streamer quality run`: the companion consumer that joins delayed labels to the scores events got.

Why a command of its own and not the worker's group: labels come keyed by whatever the labelling
system uses (the event id, a case id), not by the worker's partition key, on their own schedule
(days later, in bursts after a chargeback file lands) and at a small fraction of the event rate.
Reading them in the worker would put a second topic's rebalances, offsets and lag into the
scoring loop; here they only meet Redis, where the worker left each event's score
(`streamer.quality.scores`). Run one or a few per consumer group (`quality.group_id`).

Per poll: decode (malformed labels and empty event ids are dead-lettered), one MGET for the
batch's scores, and the joined labels counted into the window of their *event's* time and the
model version that decided (`QualityAccumulator`); labels whose event has no score (never scored,
or expired after `quality.label_horizon_s`) are counted as unknown, not errors. At each checkpoint
the counts since the last one go to `topics.quality` as increments, then the label offsets
commit (the worker's checkpoint, `streamer.kafka.delivery`; in exactly-once mode both in one
transaction). Increments of
every consumer and every late label add up downstream (`windows.merge_by_window`).

When Redis cannot answer within the retry budget, or outputs are lost, or partitions are lost,
the counts since the last commit are dropped and the consumer rewinds to it: each label is
counted once per committed checkpoint (at least once: a crash after the increments are written and
before the commit counts them again; exactly-once mode does not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis

from streamer.codec import AvroCodec
from streamer.dead_letters import DeadLetterWriter
from streamer.errors import Fatal, OutputsLost, Retriable
from streamer.kafka.admin import record_limits
from streamer.kafka.consumer import KafkaSource
from streamer.kafka.delivery import checkpoint_for
from streamer.kafka.producer import KafkaSink
from streamer.metrics import Metrics
from streamer.quality.records import to_avro_record
from streamer.quality.scores import ScoreLayout, unpack
from streamer.quality.windows import Quality, QualityAccumulator, QualityCounts, evaluate, merge
from streamer.records import RawBatch, Rejection, has_id
from streamer.retry import bounded
from streamer.settings import Settings

log = logging.getLogger(__name__)

BATCH = 4096  # labels per poll: one MGET each
IDLE_POLL_S = 0.1
LABEL_FIELDS = {"event_id": "string", "label": "boolean", "label_time": "long"}
FIGURES = ("base_rate", "precision", "recall", "auc", "calibration_error")


@dataclass
class JoinStats:
    labels: int = 0
    joined: int = 0
    unknown: int = 0
    dead_lettered: int = 0
    records: int = 0  # increments written to topics.quality


class LabelJoiner:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        quality, topics = settings.quality, settings.topics
        if quality is None or not topics.labels or not topics.quality:
            raise Fatal("quality: the section is absent; add `quality:` with topics.labels and topics.quality")
        self.settings, self.quality_topic = settings, topics.quality
        self.group = quality.group_id or f"{settings.consumer_config()['group.id']}-quality"
        self.consumer_config = {**settings.consumer_config(), "group.id": self.group}
        self.producer_config = settings.producer_config()
        if "transactional.id" in self.producer_config:  # never the worker's id: the two would fence each other
            self.producer_config["transactional.id"] = f"{self.group}-{settings.worker_id}"
        self.metrics = Metrics.create()
        self.codec = AvroCodec(settings.schemas.labels)
        wrong = {n: t for n, t in LABEL_FIELDS.items() if self.codec.field_types.get(n) != t}
        if wrong:
            raise Fatal(f"schemas.labels: {self.codec.path} must have fields {wrong} (see schemas/label.avsc)")
        self.quality_codec = AvroCodec(settings.schemas.quality)
        self.source = KafkaSource(self.consumer_config, topics.labels, self._on_revoke, self._on_lost, self.metrics)
        self.sink = KafkaSink(self.producer_config, self.metrics, settings.delivery.mode == "exactly_once")
        delivery = settings.delivery
        self.dead_letters = DeadLetterWriter(
            topics.dlq,
            AvroCodec(settings.schemas.dlq),
            self.sink,
            self.metrics,
            settings.worker_id,
            delivery.refused_records == "stop",
        )
        self.checkpoint = checkpoint_for(delivery, self.source, self.sink, self.dead_letters.refused_outputs, clock)
        self.accumulator = QualityAccumulator(quality.window_s, settings.model.alert_threshold, settings.worker_id)
        self.redis = settings.features.client()
        self.layout = ScoreLayout(settings.features.key_prefix, quality.label_horizon_s)
        features = settings.features
        self.retrying = bounded("redis", features.retries, features.max_stall_ms / 1000, self.metrics)
        self.stats = JoinStats()
        self._latest: dict[int, QualityCounts] = {}  # per model version: the newest window this consumer updated
        self._rewinding = False
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_labels: int | None = None, timeout_s: float | None = None) -> JoinStats:
        """Until stopped, or until `max_labels` are done or `timeout_s` passes (tests)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            self._start()
            while not self._stop.is_set():
                self._step()
                done = self.stats.joined + self.stats.unknown + self.stats.dead_lettered
                if (max_labels is not None and done >= max_labels) or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    break
            if not self._rewinding:
                self._commit()
        finally:
            self.source.close()
            self.sink.close(self.settings.delivery.flush_timeout_s)
            log.info("quality consumer stopped: %s", self.stats, extra={"event": "shutdown", **vars(self.stats)})
        return self.stats

    def _start(self) -> None:
        settings, topics = self.settings, self.settings.topics
        self.source.start()
        assert topics.labels is not None
        limits = record_limits(
            settings.admin_config(),
            self.producer_config,
            self.consumer_config,
            topics.labels,
            [topics.dlq, self.quality_topic],
        )
        self.dead_letters.start(limits[topics.dlq])
        self.sink.start(settings.delivery.flush_timeout_s, limits)

    def _step(self) -> None:
        if self._rewinding:
            self.source.poll(BATCH, IDLE_POLL_S)  # keeps the membership; what it returns precedes the seek
            self._try_rewind()
            return
        raw = self.source.poll(BATCH, IDLE_POLL_S)
        if len(raw) and not self._rewinding:  # a rebalance in that poll may have had to rewind
            self._join(raw)
        self.sink.poll()
        if self.checkpoint.due():
            self._commit()

    def _join(self, raw: RawBatch) -> None:
        labels, dead = self.codec.decode(raw)
        ids = labels.columns["event_id"]
        identified = has_id(ids)
        if not identified.all():
            empty = Rejection("MissingEventId", "the label's event_id is empty: it names no event")
            dead += self.codec.dead_letters(
                labels, dict.fromkeys(np.flatnonzero(~identified).tolist(), empty), raw.topic
            )
            labels = labels.take(identified)
        if len(labels):
            try:
                replies = self.retrying(self._read, labels.columns["event_id"].tolist())
            except Retriable as exc:
                log.warning("redis failed after retries (%s): rewinding to the last commit", exc)
                self._rewind()
                return
            found, values = unpack(replies)
            label = labels.columns["label"].astype(bool)[found]
            self.accumulator.add(values["event_time"], values["model_version"], values["score"], label)
            self._count_labelled(values, label)
            self.stats.joined += len(values)
            self.stats.unknown += len(labels) - len(values)
            self.metrics.quality_labels.labels("joined").inc(len(values))
            self.metrics.quality_labels.labels("unknown").inc(len(labels) - len(values))
            self.checkpoint.mark_processed(labels.partitions, labels.offsets)
        if dead:
            self.dead_letters.write(dead)
            self.stats.dead_lettered += len(dead)
            self.metrics.quality_labels.labels("dead_lettered").inc(len(dead))
            self.checkpoint.mark_processed(
                np.array([d.partition for d in dead], np.int32), np.array([d.offset for d in dead], np.int64)
            )
        self.stats.labels += len(raw)

    def _read(self, event_ids: list[str]) -> list[bytes | None]:
        """The scores of `event_ids` in one pipeline: one round trip, only reads."""
        pipe = self.redis.pipeline(transaction=False)
        read = self.layout.queue_read(pipe, event_ids)
        try:
            return read(pipe.execute())
        except redis.RedisError as exc:
            raise Retriable(f"redis: {exc}") from exc

    def _count_labelled(self, values: np.ndarray, label: np.ndarray) -> None:
        alert = values["score"] >= self.accumulator.threshold
        cells = np.stack([values["model_version"], label, alert], axis=1)
        for (version, positive, alerted), n in zip(*np.unique(cells, axis=0, return_counts=True), strict=True):
            cell = (str(version), str(int(positive)), str(bool(alerted)).lower())
            self.metrics.quality_labelled.labels(*cell).inc(int(n))

    def _commit(self) -> None:
        """The counts since the last checkpoint to the quality topic, then the label offsets."""
        for counts in self.accumulator.take():
            key = f"{counts.start_ms}:{counts.model_version}".encode()  # a window's increments share a partition
            self.sink.produce(self.quality_topic, key, self.quality_codec.encode_one(to_avro_record(counts)))
            self.stats.records += 1
            self._export(counts)
        try:
            self.checkpoint.commit({})
        except OutputsLost as exc:
            log.warning("checkpoint failed, rewinding: %s", exc, extra={"event": "rewind"})
            self._rewind()
        except Retriable as exc:
            log.warning("checkpoint deferred: %s", exc)

    def _export(self, counts: QualityCounts) -> None:
        """Gauges: this consumer's figures for the newest window it updated, per model version."""
        latest = self._latest.get(counts.model_version)
        if latest is not None and latest.start_ms > counts.start_ms:
            return
        if latest is not None and latest.start_ms == counts.start_ms:
            counts = merge([latest, counts])
        self._latest[counts.model_version] = counts
        figures: Quality = evaluate(counts)
        for metric in FIGURES:
            value = getattr(figures, metric)
            if value is not None:
                self.metrics.quality_value.labels(str(counts.model_version), metric).set(value)

    def _rewind(self) -> None:
        """Drop what was counted since the last commit and read its labels again from there."""
        self.accumulator.clear()
        self.checkpoint.rewind()
        self._rewinding = True  # the next step seeks, once the partitions lost in a callback are released

    def _try_rewind(self) -> None:
        if not self.checkpoint.rewound():
            return
        try:
            self.source.rewind()
        except Retriable as exc:
            log.warning("rewind waits for the broker: %s", exc)
            return
        self._rewinding = False

    def _on_revoke(self, partitions: list[int]) -> None:
        """Counted labels of every owned partition go out and commit while still owned."""
        if not self._rewinding:
            self._commit()
        self.checkpoint.forget(partitions)

    def _on_lost(self, partitions: list[int]) -> None:
        """The counts mix partitions: drop them all, and read the partitions still owned again."""
        self.checkpoint.forget(partitions)
        self._rewind()
