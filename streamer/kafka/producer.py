"""The sink: an idempotent producer, transactional in exactly-once mode.

Delivery reports only carry errors (`delivery.report.only.error`), so success costs nothing; a
failed delivery is held and raised at the next checkpoint as `OutputsLost`, which makes the
worker rewind to its last commit instead of committing past a lost output.

With a `transactional.id` in the config, every checkpoint is one transaction: the outputs since
the last one and the input offsets (`send_offsets_to_transaction`) commit or abort together. A
failed transaction is not aborted on the same instance: the producer is replaced by a new one
(same id, new epoch), whose `init_transactions` fences the old one and aborts its transaction on
the broker. After the broker went away, librdkafka can keep a stale transaction coordinator and
hang in `send_offsets_to_transaction` past its timeout (librdkafka#5456, #5511); a fresh
instance looks the coordinator up again. So fencing, a failed transaction and a lost broker each
cost a rewind to the last commit, never the process.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamer.errors import Fatal, OutputsLost, Retriable
from streamer.kafka.errors import retriable_errors
from streamer.metrics import Metrics
from streamer.retry import bounded

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


TRANSACTION_RETRIES = 4  # attempts after the first at a retriable commit or a replacement's init


class KafkaSink:
    def __init__(self, config: dict[str, Any], metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.transactional = "transactional.id" in config
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self._fatal = False
        self._brokers_lost = False  # every broker went down since the transaction began
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
        elif error.code() == KafkaError._ALL_BROKERS_DOWN and self._in_transaction:
            self._brokers_lost = True
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
        """Outputs since the last commit and `offsets`, atomically; `OutputsLost` when the
        transaction had to be abandoned (the producer is replaced: see the module docstring)."""
        if self._brokers_lost:
            self._replace(timeout_s)
            raise OutputsLost("every broker went away during the transaction; it was abandoned")
        try:
            if not self._in_transaction:
                self.producer.begin_transaction()
                self._in_transaction = True
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
            self._retrying(timeout_s)(self._transaction_call, self.producer.commit_transaction, timeout_s)
            self._in_transaction = False
        except (KafkaException, Retriable) as exc:
            log.warning("transaction failed (%s); replacing the producer and rewinding", exc)
            self._replace(timeout_s)
            raise OutputsLost(f"transaction abandoned: {exc}") from exc
        self._raise_failures()

    def _retrying(self, timeout_s: float) -> Any:
        return bounded("kafka_transaction", TRANSACTION_RETRIES, TRANSACTION_RETRIES * timeout_s, self.metrics)

    @staticmethod
    def _transaction_call(call: Any, timeout_s: float) -> None:
        """A transactional API call, with librdkafka's retriable errors raised as `Retriable`."""
        with retriable_errors(""):
            call(timeout_s)

    def abort(self, timeout_s: float) -> None:
        """Drop the open transaction's outputs: replace the producer (which aborts it on the
        broker), or, outside exactly-once, forget the failed deliveries."""
        self._failures = []
        if self.transactional and (self._in_transaction or self._fatal):
            self._replace(timeout_s)

    def _replace(self, timeout_s: float) -> None:
        log.warning("replacing the transactional producer", extra={"event": "producer_replaced"})
        self._producer = None
        self._fatal = self._brokers_lost = self._in_transaction = False
        self._failures = []
        try:
            self._retrying(timeout_s)(self._transaction_call, self.producer.init_transactions, timeout_s)
        except (KafkaException, Retriable) as exc:
            raise Fatal(
                f"kafka: cannot restart transactions as {self.config['transactional.id']!r} within "
                f"{TRANSACTION_RETRIES + 1} attempts ({exc}); is the broker up?"
            ) from exc

    def close(self, timeout_s: float) -> None:
        if self._producer is None:
            return
        if self._in_transaction:  # an uncommitted transaction's outputs must not appear
            try:
                self._producer.abort_transaction(timeout_s)
            except KafkaException as exc:
                log.warning("abort at close failed (%s); the broker aborts it after transaction.timeout.ms", exc)
        self._producer.flush(timeout_s)
        self._producer = None
