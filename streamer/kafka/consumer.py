"""The source: one consumer-group member, batch polls, rebalance hooks, synchronous commits.

Newly assigned partitions start where librdkafka's OffsetFetch to the group coordinator says.
When that request fails as a whole with a coordinator error (a broker restarted, its coordinator
moved), librdkafka reports it once and never retries: the partitions stay assigned with no fetch
position, and nothing is ever read from them (librdkafka#5586). So partitions that have given
nothing since their assignment are seated again after such an error: their committed offsets
are read here, and they are assigned again at those offsets explicitly. Having given nothing,
they have nothing in flight to lose.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamer.errors import Fatal, Retriable
from streamer.kafka.errors import BROKER_AWAY, retriable_errors
from streamer.metrics import Metrics
from streamer.records import RawBatch, RecordHeaders

log = logging.getLogger(__name__)

PartitionsCallback = Callable[[list[int]], None]
COMMITTED_TIMEOUT_S = 10.0
# `auto.offset.reset` values, as an explicit start for a partition with no committed offset
RESET_OFFSETS = {
    "earliest": OFFSET_BEGINNING,
    "smallest": OFFSET_BEGINNING,
    "beginning": OFFSET_BEGINNING,
    "latest": OFFSET_END,
    "largest": OFFSET_END,
    "end": OFFSET_END,
}


class KafkaSource:
    """Connects on `start`, not in `__init__`, so a bad config fails where it can be reported."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        on_revoke: PartitionsCallback,
        on_lost: PartitionsCallback,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.topic = topic
        self.on_revoke = on_revoke
        self.on_lost = on_lost
        self.assigned: set[int] = set()
        self.capture_headers = False  # on for tracing: headers cost a Python list per message
        self._consumer: Consumer | None = None
        self._paused = False
        self._silent: set[int] = set()  # assigned partitions that have given no message since
        self._reseat_due = False  # an OffsetFetch failed: silent partitions may have no position

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("KafkaSource.start() was not called")
        return self._consumer

    def start(self, timeout_s: float = 10.0) -> None:
        try:
            self._consumer = Consumer(
                {**self.config, "error_cb": _log_client_error, "stats_cb": self._statistics, "logger": log}
            )
        except KafkaException as exc:
            raise Fatal(f"kafka consumer config: {exc.args[0].str()}; fix kafka.common / kafka.consumer") from exc
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise Fatal(
                f"kafka: no broker answered at {self.config.get('bootstrap.servers')} within {timeout_s:.0f} s; "
                "start it (make stack-up) or fix kafka.common.bootstrap.servers"
            ) from exc
        topic_meta = metadata.topics.get(self.topic)
        if topic_meta is None or topic_meta.error is not None:
            raise Fatal(f"kafka: topic {self.topic!r} does not exist; run `streamer topics create --config …`")
        self.consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    def _assigned(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = sorted(tp.partition for tp in partitions)
        self.assigned.update(assigned)
        self._silent.update(assigned)
        log.info("assigned partitions %s", assigned, extra={"event": "assign", "partitions": assigned})
        if self._paused and partitions:
            # Input is paused (a rewind, or outputs backed up): new partitions must not be fetched
            # either. A pause inside this callback is undone by the assign the client makes once
            # it returns, so assign here (the client then makes none) and pause after it.
            self._reassign([], partitions)
            self.consumer.pause(partitions)

    def _reassign(self, dropped: list[TopicPartition], added: list[TopicPartition]) -> None:
        """`dropped` out of this member's assignment and `added` in, as the group's protocol lets a
        member change it: piece by piece (cooperative assignors, the KIP-848 `consumer` protocol),
        or else whole, the partitions kept staying at their positions. librdkafka refuses the
        other way (checked: incremental_unassign under `range` fails with _STATE)."""
        strategy = str(self.config.get("partition.assignment.strategy", "range,roundrobin"))
        if "cooperative" in strategy or str(self.config.get("group.protocol", "classic")) == "consumer":
            if dropped:
                self.consumer.incremental_unassign(dropped)
            self.consumer.incremental_assign(added)
            return
        gone = {tp.partition for tp in dropped}
        kept = [tp for tp in self.consumer.position(self.consumer.assignment()) if tp.partition not in gone]
        self.consumer.assign(kept + added)

    def _revoked(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [tp.partition for tp in partitions]
        log.info("revoking partitions %s", sorted(revoked), extra={"event": "revoke", "partitions": sorted(revoked)})
        self.on_revoke(revoked)
        self._release(revoked)

    def _lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        lost = [tp.partition for tp in partitions]
        log.warning("lost partitions %s", sorted(lost), extra={"event": "lost", "partitions": sorted(lost)})
        self.on_lost(lost)
        self._release(lost)

    def _release(self, partitions: list[int]) -> None:
        if self._paused and partitions:
            # librdkafka keeps a partition's pause flag after it is unassigned: revoked while paused,
            # it would come back paused at a later assignment and never be fetched again (resume()
            # only reaches what is assigned then). Checked against librdkafka 2.16.
            self.consumer.resume([TopicPartition(self.topic, p) for p in partitions])
        self.assigned.difference_update(partitions)
        self._silent.difference_update(partitions)
        for partition in partitions:
            with contextlib.suppress(KeyError):  # never reported a lag yet
                self.metrics.consumer_lag.remove(self.topic, str(partition))

    def _statistics(self, payload: str) -> None:
        """librdkafka's statistics (every statistics.interval.ms): lag = high watermark minus the
        committed offset, per partition this member owns; -1 (unknown yet) is skipped."""
        partitions = json.loads(payload).get("topics", {}).get(self.topic, {}).get("partitions", {})
        for partition, stats in partitions.items():
            if partition.isdigit() and int(partition) in self.assigned and stats.get("consumer_lag", -1) >= 0:
                self.metrics.consumer_lag.labels(self.topic, partition).set(stats["consumer_lag"])

    def poll(self, max_messages: int, timeout_s: float) -> RawBatch:
        """Up to `max_messages` messages; rebalance callbacks run inside this call."""
        if self._reseat_due:
            self._reseat()
        messages: list[Message] = self.consumer.consume(max(max_messages, 1), timeout_s)
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.fatal():
                raise Fatal(f"kafka consumer: {error.str()}")
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer: %s", error.str())
                if error.code() in BROKER_AWAY:  # maybe the OffsetFetch of a new assignment
                    self._reseat_due = bool(self._silent)
        partitions = np.fromiter((m.partition() for m in good), dtype=np.int32, count=len(good))
        if self._silent and good:
            self._silent.difference_update(np.unique(partitions).tolist())
        return RawBatch(
            self.topic,
            partitions,
            np.fromiter((m.offset() for m in good), dtype=np.int64, count=len(good)),
            [m.key() for m in good],
            [m.value() for m in good],
            # a consumed message's headers are (name, bytes) pairs; the stubs also allow a producer's
            cast("list[RecordHeaders | None]", [m.headers() for m in good]) if self.capture_headers else None,
        )

    def commit(self, next_offsets: dict[int, int]) -> None:
        """Synchronous: when this returns, the group coordinator has the offsets."""
        if next_offsets:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in next_offsets.items()],
                asynchronous=False,
            )

    def group_metadata(self) -> object:
        """The member's group metadata, for `send_offsets_to_transaction` (KIP-447 fencing)."""
        return self.consumer.consumer_group_metadata()

    def rewind(self) -> None:
        """Seek every owned partition back to its committed offset (the beginning if none), so
        what was consumed since the last commit is consumed again. One attempt, bounded by
        COMMITTED_TIMEOUT_S: right after a broker restart the group coordinator can take tens of
        seconds to load, and the worker retries on later steps, polling in between, rather than
        block past `max.poll.interval.ms` or crash. Raises `Retriable` while it cannot."""
        owned = [TopicPartition(self.topic, p) for p in sorted(self.assigned)]
        if not owned:
            return
        for tp in self._committed(owned):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(self.topic, tp.partition, offset))
        log.warning(
            "rewound partitions %s to their last commit", [tp.partition for tp in owned], extra={"event": "rewind"}
        )

    def _committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        with retriable_errors("committed offsets: ", BROKER_AWAY):
            return list(self.consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S))

    def _reseat(self) -> None:
        """Assign the silent partitions again at their committed offsets (see the module
        docstring). One attempt bounded by COMMITTED_TIMEOUT_S; while the coordinator is away,
        the next poll tries again."""
        silent = [TopicPartition(self.topic, p) for p in sorted(self._silent)]
        if not silent:
            self._reseat_due = False
            return
        try:
            committed = self._committed(silent)
        except Retriable as exc:
            log.warning("partitions %s wait for their committed offsets: %s", [tp.partition for tp in silent], exc)
            return
        reset = RESET_OFFSETS.get(str(self.config.get("auto.offset.reset", "latest")), OFFSET_STORED)
        seats = [TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else reset) for tp in committed]
        self._reassign(silent, seats)
        if self._paused:
            self.consumer.pause(silent)
        self._reseat_due = False
        log.warning(
            "partitions %s seated again at their committed offsets after a failed offset fetch",
            [tp.partition for tp in silent],
            extra={"event": "reseat"},
        )

    def pause(self) -> None:
        self.consumer.pause([TopicPartition(self.topic, p) for p in self.assigned])
        self._paused = True

    def resume(self) -> None:
        self.consumer.resume([TopicPartition(self.topic, p) for p in self.assigned])
        self._paused = False

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _log_client_error(error: KafkaError) -> None:
    log.warning("kafka client: %s", error.str())


def read_topic_to_end(config: dict[str, Any], topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every committed value on `topic` from the beginning to its current end: no group offsets
    are used or committed, and read_committed leaves aborted transactions out."""
    reader = {"group.id": "streamer-reader", "isolation.level": "read_committed", "enable.partition.eof": True}
    consumer = Consumer({**config, **reader})
    try:
        try:
            partitions = set(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        except KafkaException as exc:
            raise Fatal(f"kafka: cannot list topic {topic} ({exc}); start the broker or fix kafka.common") from exc
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values: list[bytes] = []
        while partitions:
            message = consumer.poll(timeout_s)
            if message is None:
                raise Fatal(f"kafka: {topic} partitions {sorted(partitions)} gave nothing for {timeout_s:.0f} s; retry")
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    partitions.discard(message.partition())
                continue
            value = message.value()
            if value is not None:
                values.append(value)
        return values
    finally:
        consumer.close()
