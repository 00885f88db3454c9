"""The sink: an idempotent producer whose delivery failures surface at the next checkpoint."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamer.errors import Fatal, Retriable

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class KafkaSink:
    """Delivery reports only carry errors (`delivery.report.only.error`), so success costs nothing;
    a failed delivery is held and raised by `flush`, which the checkpoint calls before committing."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self._fatal = False

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

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}[{message.partition()}]: {error.str()}")

    @property
    def healthy(self) -> bool:
        """False once librdkafka reported a fatal error: this producer instance cannot recover."""
        return not self._fatal

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
            self._failures.append(f"fatal producer error: {error.str()}")
        log.warning("kafka producer: %s", error.str())

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        """Queue one message; when librdkafka's queue is full, serve delivery reports and retry."""
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
        failures, self._failures = self._failures, []
        if failures:
            raise Fatal(
                f"{len(failures)} outputs not delivered (first: {failures[0]}); stopping without "
                "a commit so the group replays them"
            )
        if remaining:
            raise Retriable(f"{remaining} outputs still unacknowledged after {timeout_s:.0f} s")

    def close(self, timeout_s: float) -> None:
        if self._producer is not None:
            self._producer.flush(timeout_s)
            self._producer = None
