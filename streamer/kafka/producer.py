"""The sink: an idempotent producer, transactional in exactly-once mode.

In at-least-once mode every delivery is reported, to the `Epoch` (the outputs between two
checkpoint cuts) its message was produced in, so a checkpoint can tell when all outputs before
its cut are acknowledged without waiting for them (`cut`, `settled_through`). In exactly-once
mode reports only carry errors (`delivery.report.only.error`): the transaction's commit waits
for its outputs. A failed delivery is held and raised at the next checkpoint as `OutputsLost`,
which makes the worker rewind to its last commit instead of committing past a lost output.

When transactional (exactly-once), every checkpoint is one transaction: the outputs since
the last one and the input offsets (`send_offsets_to_transaction`) commit or abort together. A
failed transaction is not aborted on the same instance: the producer is replaced by a new one
(same id, new epoch), whose `init_transactions` fences the old one and aborts its transaction on
the broker. After the broker went away, librdkafka can keep a stale group coordinator and
block in `send_offsets_to_transaction` forever, whatever its timeout (librdkafka#5456, #5511):
the call runs on a thread of its own, and one that has not returned a second past its timeout is
abandoned with its producer instance (the replacement fences it) and fails the transaction; a
fresh instance looks the coordinator up again. So fencing, a failed transaction and a lost
broker each cost a rewind to the last commit, never the process nor a stalled loop. Registering
the new instance is one bounded attempt per loop step (`restart`), so the loop keeps polling
while the broker is away.

A refusal is not a failure: a record the producer or the broker refuses for good (too large,
invalid, against a topic policy) would be refused again after any number of rewinds. One that
is larger than its topic takes (the smaller of `message.max.bytes` and the topic's
`max.message.bytes`, given to `start`) is refused here, before it is sent, and `produce`
returns False so the caller can dead-letter what it stands for. One the broker refuses is held
as a `Refusal` for the checkpoint to hand on (`take_refused`); in a transaction it makes the
transaction abort, and the same refusal on the replay stops the worker, since no transaction
can commit around it. A refusal for lack of access (ACLs) stops the worker at the checkpoint
with one line: every record would be refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamer.errors import Fatal, OutputsLost, Retriable
from streamer.kafka.errors import BROKER_AWAY, retriable_errors
from streamer.metrics import Metrics
from streamer.retry import bounded

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


TRANSACTION_RETRIES = 4  # attempts after the first at a retriable commit or a replacement's init
ABANDON_AFTER_S = 1.0  # past its own timeout, a librdkafka call that has not returned is abandoned
# Kafka's framing around one record in a batch (batch header 61 B, record and header varints), with room.
RECORD_OVERHEAD = 512
# Errors about one record: it will be refused again however often it is sent.
RECORD_REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.POLICY_VIOLATION,
    }
)
# Errors about the topic or the principal: every record will be refused until a person acts.
ACCESS_REFUSALS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class Epoch:
    """The outputs produced between two checkpoint cuts, and how many of them have a delivery
    report yet. One callback object per epoch, not per message: every message of the epoch
    reports to it, so knowing that everything before a cut was acknowledged costs a counter."""

    def __init__(self, on_failure: Callable[[KafkaError, Message], None]) -> None:
        self.produced = 0
        self.reported = 0
        self._on_failure = on_failure

    def report(self, error: KafkaError | None, message: Message) -> None:
        self.reported += 1
        if error is not None:
            self._on_failure(error, message)

    @property
    def settled(self) -> bool:
        return self.reported >= self.produced


@dataclass(frozen=True)
class Refusal:
    """One output refused for good: resending it cannot help."""

    topic: str
    key: bytes | None
    value: bytes | None
    error: str


class KafkaSink:
    def __init__(self, config: dict[str, Any], metrics: Metrics, transactional: bool = False) -> None:
        """`transactional`: exactly-once delivery, decided by `delivery.mode` alone (settings refuse
        a `transactional.id` passed through without it)."""
        self.config = config
        self.metrics = metrics
        self.transactional = transactional
        self._producer: Producer | None = None
        self._failures: list[str] = []
        self._refused: list[Refusal] = []
        self._access_denied: str | None = None
        self._refusal_replays = 0  # transactions in a row that aborted over a refused record
        self.limits: dict[str, int] = {}  # topic → largest record it takes, set by `start`
        # topic → the bytes each value on it starts with: the Confluent header of its registered
        # schema (`streamer.registry.frames`), so the stages above encode plain Avro either way.
        self.frames: dict[str, bytes] = {}
        self._fatal = False
        self._brokers_lost = False  # every broker went down since the transaction began
        self._in_transaction = False
        self._needs_init = False  # replaced, and init_transactions has not succeeded yet
        # At-least-once: every delivery is reported, to the epoch its message was produced in.
        self._epochs = [Epoch(self._on_delivery)] if not transactional else []

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(
                    {
                        **self.config,
                        "delivery.report.only.error": self.transactional,
                        "on_delivery": self._on_delivery,
                        "error_cb": self._on_error,
                        "logger": log,
                    }
                )
            except KafkaException as exc:
                raise Fatal(f"kafka producer config: {exc.args[0].str()}; fix kafka.common / kafka.producer") from exc
        return self._producer

    def start(self, timeout_s: float, limits: dict[str, int]) -> None:
        """Register the transactional id; this fences any older instance holding it. `limits`:
        per topic, the largest record (key, value and headers) it accepts."""
        self.limits = limits
        if self.transactional:  # before joining the group: waiting for a loading coordinator is safe
            self._needs_init = True
            attempts = TRANSACTION_RETRIES + 1
            if not any(self.restart(timeout_s) for _ in range(attempts)):
                raise Fatal(
                    f"kafka: cannot start transactions as {self.config['transactional.id']!r} within {attempts} "
                    f"attempts of {timeout_s:.0f} s; is the broker up?"
                )

    @property
    def healthy(self) -> bool:
        """False once librdkafka reported a fatal error, until the producer is replaced."""
        return not self._fatal

    def in_flight(self) -> int:
        """Messages queued or awaiting acknowledgement."""
        return len(self.producer)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        topic = str(message.topic())
        if error.code() in RECORD_REFUSALS:
            self._refused.append(Refusal(topic, message.key(), message.value(), error.name()))
        elif error.code() in ACCESS_REFUSALS:
            self._access_denied = f"{topic}: {error.str()}"
        else:
            self._failures.append(f"{topic}[{message.partition()}]: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
            self._failures.append(f"fatal producer error: {error.str()}")
        elif error.code() == KafkaError._ALL_BROKERS_DOWN and self._in_transaction:
            self._brokers_lost = True
        log.warning("kafka producer: %s", error.str())

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> bool:
        """Queue one message; when librdkafka's queue is full, serve delivery reports and retry.
        False: refused for good before sending (too large for `topic`); nothing was queued."""
        frame = self.frames.get(topic)
        if frame is not None:
            value = frame + value
        limit = self.limits.get(topic)
        if limit is not None:
            size = len(value) + len(key or b"")
            for name, header in headers or ():  # a loop, not sum(): this runs for every record
                size += len(name) + len(header or b"")
            if size + RECORD_OVERHEAD > limit:
                return False
        if self.transactional and not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True
        epoch = self._epochs[-1] if self._epochs else None
        while True:
            try:
                if epoch is None:
                    self.producer.produce(topic, value, key, headers=headers)
                else:
                    self.producer.produce(topic, value, key, headers=headers, on_delivery=epoch.report)
                    epoch.produced += 1
                return True
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                if exc.args[0].code() in RECORD_REFUSALS:
                    return False
                raise

    def cut(self) -> Epoch:
        """At-least-once: close the current epoch (what `settled_through` is later asked about)
        and start the next one."""
        self._epochs.append(Epoch(self._on_delivery))
        return self._epochs[-2]

    def settled_through(self, epoch: Epoch) -> bool:
        """Whether every output of `epoch` and of the epochs before it has been reported on (a
        failure among them is raised by `raise_failures`). Reports arrive through `poll`, which
        the loop calls every step; this never waits."""
        while len(self._epochs) > 1 and self._epochs[0].settled:
            self._epochs.pop(0)
        return epoch not in self._epochs

    def take_refused(self) -> list[Refusal]:
        """Outputs the broker refused for good since the last call (see the module docstring)."""
        refused, self._refused = self._refused, []
        return refused

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> None:
        """Wait for every queued message; raise if any of them was not acknowledged."""
        remaining = self.producer.flush(timeout_s)
        if not remaining:
            del self._epochs[:-1]  # every report is in
        self.raise_failures()
        if remaining:
            raise Retriable(f"{remaining} outputs still unacknowledged after {timeout_s:.0f} s")

    def raise_failures(self) -> None:
        """`OutputsLost` if a delivery failed since the last call; `Fatal` if writes are denied."""
        self._raise_access_denied()
        failures, self._failures = self._failures, []
        if failures:
            raise OutputsLost(f"{len(failures)} outputs not delivered (first: {failures[0]})")

    def _raise_access_denied(self) -> None:
        if self._access_denied is not None:
            raise Fatal(
                f"kafka: the broker refuses this producer's writes to {self._access_denied}; grant its principal "
                "Write (and, for exactly_once, transactional) access, or fix topics.*"
            )

    def commit_transaction(self, offsets: list[TopicPartition], group_metadata: object, timeout_s: float) -> None:
        """Outputs since the last commit and `offsets`, atomically; `OutputsLost` when the
        transaction had to be abandoned (the producer is replaced: see the module docstring)."""
        if not self.restart(timeout_s):
            raise Retriable("the replaced transactional producer is not registered yet")
        if self._brokers_lost:
            self._replace(timeout_s)
            raise OutputsLost("every broker went away during the transaction; it was abandoned")
        try:
            if not self._in_transaction:
                self.producer.begin_transaction()
                self._in_transaction = True
            if offsets:
                self._send_offsets(offsets, group_metadata, timeout_s)
            self._retrying(timeout_s)(self._transaction_call, self.producer.commit_transaction, timeout_s)
            self._in_transaction = False
        except (KafkaException, Retriable) as exc:
            refused = self._refused[:1]
            log.warning("transaction failed (%s); replacing the producer and rewinding", exc)
            self._replace(timeout_s)
            self._raise_access_denied()
            self._refusal_replays = self._refusal_replays + 1 if refused else 0
            if self._refusal_replays >= 2:
                raise Fatal(
                    f"kafka: {refused[0].topic} refused a record again on its replay ({refused[0].error}); no "
                    "transaction can commit around it: fix the topic's policy or limits, or use at_least_once"
                ) from exc
            raise OutputsLost(f"transaction abandoned: {exc}") from exc
        self._refusal_replays = 0
        self.raise_failures()

    def _send_offsets(self, offsets: list[TopicPartition], group_metadata: object, timeout_s: float) -> None:
        """`send_offsets_to_transaction`, given up on ABANDON_AFTER_S past `timeout_s` (see the
        module docstring): the thread left behind holds the instance the caller then replaces."""
        producer, failure, returned = self.producer, list[BaseException](), threading.Event()

        def send() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
            finally:
                returned.set()

        threading.Thread(target=send, name="kafka-send-offsets", daemon=True).start()
        if not returned.wait(timeout_s + ABANDON_AFTER_S):
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "send_offsets_to_transaction outlived its timeout; abandoned")
            )
        if failure:
            raise failure[0]

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
        self._failures, self._refused = [], []
        if self.transactional and (self._in_transaction or self._fatal):
            self._replace(timeout_s)

    def _replace(self, timeout_s: float) -> None:
        log.warning("replacing the transactional producer", extra={"event": "producer_replaced"})
        self._producer = None
        self._fatal = self._brokers_lost = self._in_transaction = False
        self._failures, self._refused = [], []
        self._needs_init = True
        self.restart(timeout_s)

    @property
    def ready(self) -> bool:
        """False while a replaced transactional producer is not registered: nothing may be produced."""
        return not self._needs_init

    def restart(self, timeout_s: float) -> bool:
        """One attempt, within `timeout_s`, to register a replaced producer (`init_transactions`,
        which fences the old one); True once registered. The worker calls it again on later
        steps while it goes on polling, so a broker that is away never holds the loop past
        `max.poll.interval.ms`. Errors waiting cannot fix stop the worker."""
        if not self._needs_init:
            return True
        try:
            with retriable_errors("", BROKER_AWAY):
                self.producer.init_transactions(timeout_s)
        except Retriable as exc:
            log.warning("transactional producer not registered yet (%s); retrying on the next step", exc)
            return False
        except KafkaException as exc:
            raise Fatal(
                f"kafka: cannot start transactions as {self.config['transactional.id']!r}: "
                f"{exc.args[0].str()}; check the broker's transaction settings and ACLs"
            ) from exc
        self._needs_init = False
        return True

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
