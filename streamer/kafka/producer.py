"""The sink: an idempotent producer, transactional in exactly-once mode.

Delivery reports only carry errors (`delivery.report.only.error`), so success costs nothing; a
failed delivery is held and raised at the next checkpoint as `OutputsLost`, which makes the
worker rewind to its last commit instead of committing past a lost output.

With a `transactional.id` in the config, every checkpoint is one transaction: the outputs since
the last one and the input offsets (`send_offsets_to_transaction`) commit or abort together. A
fenced or otherwise fatally failed producer is replaced by a new instance (same id, new epoch),
so fencing costs a rewind, never the process.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamer.errors import Fatal, OutputsLost, Retriable

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class KafkaSink:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.transactional = "transactional.id" in config
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self._fatal = False
        self._in_transaction = False

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(
                    {
                        **self.config,
                        "delivery.report.only.error": True,
                        "on_delivery": self._on_delivery,
                        "error_cb": self._on_error,
                        "logger": log,
                    }
                )
            except KafkaException as exc:
                raise Fatal(f"kafka producer config: {exc.args[0].str()}; fix kafka.common / kafka.producer") from exc
        return self._producer

    def start(self, timeout_s: float) -> None:
        """Register the transactional id; this fences any older instance holding it."""
        if self.transactional:
            try:
                self.producer.init_transactions(timeout_s)
            except KafkaException as exc:
                raise Fatal(
                    f"kafka: cannot start transactions as {self.config['transactional.id']!r}: "
                    f"{exc.args[0].str()}; check the broker's transaction settings and ACLs"
                ) from exc

    @property
    def healthy(self) -> bool:
        """False once librdkafka reported a fatal error, until the producer is replaced."""
        return not self._fatal

    def in_flight(self) -> int:
        """Messages queued or awaiting acknowledgement."""
        return len(self.producer)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}[{message.partition()}]: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
            self._failures.append(f"fatal producer error: {error.str()}")
        log.warning("kafka producer: %s", error.str())

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        """Queue one message; when librdkafka's queue is full, serve delivery reports and retry."""
        if self.transactional and not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> None:
        """Wait for every queued message; raise if any of them was not acknowledged."""
        remaining = self.producer.flush(timeout_s)
        self._raise_failures()
        if remaining:
            raise Retriable(f"{remaining} outputs still unacknowledged after {timeout_s:.0f} s")

    def _raise_failures(self) -> None:
        failures, self._failures = self._failures, []
        if failures:
            raise OutputsLost(f"{len(failures)} outputs not delivered (first: {failures[0]})")

    def commit_transaction(self, offsets: list[TopicPartition], group_metadata: object, timeout_s: float) -> None:
        """Outputs since the last commit and `offsets`, atomically; `OutputsLost` after an abort."""
        try:
            if not self._in_transaction:
                self.producer.begin_transaction()
                self._in_transaction = True
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
            self._commit_with_retries(timeout_s)
            self._in_transaction = False
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            log.warning("transaction failed (%s); aborting and rewinding", error.str())
            self.abort(timeout_s)
            raise OutputsLost(f"transaction aborted: {error.str()}") from exc
        self._raise_failures()

    def _commit_with_retries(self, timeout_s: float) -> None:
        for _ in range(3):
            try:
                self.producer.commit_transaction(timeout_s)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
        self.producer.commit_transaction(timeout_s)

    def abort(self, timeout_s: float) -> None:
        """Abort the open transaction; a fenced or fatally failed producer is replaced instead."""
        self._failures = []
        if not self.transactional:
            return
        if self._fatal or self._producer is None:
            self._replace(timeout_s)
            return
        try:
            if self._in_transaction:
                self.producer.abort_transaction(timeout_s)
        except KafkaException as exc:
            log.warning("abort failed (%s); replacing the producer", exc.args[0].str())
            self._replace(timeout_s)
        self._in_transaction = False

    def _replace(self, timeout_s: float) -> None:
        log.warning("replacing the transactional producer", extra={"event": "producer_replaced"})
        self._producer = None
        self._fatal = False
        self._in_transaction = False
        self.start(timeout_s)

    def close(self, timeout_s: float) -> None:
        if self._producer is not None:
            if self._in_transaction:
                self.abort(timeout_s)  # an uncommitted transaction's outputs must not appear
            self._producer.flush(timeout_s)
            self._producer = None
