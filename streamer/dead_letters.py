"""What goes to the dead-letter topic, and the promise that a dead letter can always be written.

A dead letter keeps the original key and value verbatim, with the reason in the record and in
headers. The original can be larger than what the DLQ accepts: the producer's
`message.max.bytes` and the topic's `max.message.bytes`, whichever is smaller (read at start
with the AdminClient). Then the letter keeps the longest prefix that fits and says so
(`original_truncated`, with the original size and sha256, in the record and in headers), so a
record of any size becomes a letter instead of an exception, a rewind, or a stall.

A letter the broker still refuses for good (an ACL, a topic policy) is not retried: retrying
a permanent refusal would hold the partition forever. It is logged with its source and counted
in `streamer_dead_letters_failed_total{error}`, and the partition moves on — unless
`delivery.refused_records` is `stop`, which stops the worker with exit 2 instead.

With tracing on, a letter's headers also carry a child of its input's trace context.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from streamer.codec import AvroCodec
from streamer.errors import Fatal
from streamer.kafka.producer import RECORD_OVERHEAD, Headers, KafkaSink, Refusal
from streamer.metrics import Metrics
from streamer.records import DeadLetter, now_ms
from streamer.tracing import TRACE_HEADERS, Tracing

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000  # a reason longer than this is cut: it is a reason, not a payload
LENGTH_PREFIXES = 20  # Avro's varint lengths of the key and value, which the envelope does not count
MIN_ROOM = 1024  # a DLQ that cannot hold this much of an original is a configuration error


class DeadLetterWriter:
    def __init__(
        self,
        topic: str,
        codec: AvroCodec,
        sink: KafkaSink,
        metrics: Metrics,
        worker_id: str,
        stop_on_refusal: bool,
        tracing: Tracing | None = None,
    ) -> None:
        self.topic = topic
        self.codec = codec
        self.sink = sink
        self.metrics = metrics
        self.worker_id = worker_id
        self.stop_on_refusal = stop_on_refusal
        self.tracing = tracing or Tracing(None)
        self.limit_bytes = 0

    def start(self, limit_bytes: int) -> None:
        """`limit_bytes`: the largest record the DLQ takes (see `streamer.kafka.admin.record_limits`)."""
        if limit_bytes - RECORD_OVERHEAD - self._envelope_bytes(_PROBE, self._row(_PROBE, 0)) < MIN_ROOM:
            raise Fatal(
                f"topics.dlq {self.topic}: its size limit ({limit_bytes} bytes, the smaller of the producer's "
                "message.max.bytes and the topic's max.message.bytes) leaves no room for a dead letter; raise both"
            )
        self.limit_bytes = limit_bytes

    def write(self, letters: list[DeadLetter]) -> None:
        failed_at = now_ms()
        for letter in letters:
            log.warning(
                "dead-lettered %s[%d]@%d: %s: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.error_class,
                letter.error_message,
                extra={
                    "event": "dead_letter",
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "error_class": letter.error_class,
                },
            )
            letter = _short_reason(letter)
            whole = self._row(letter, failed_at)  # hashes the original once, however large
            key, value, truncated = self._fit(letter, whole)
            headers = self._headers(letter, whole if truncated else None)
            headers += self.tracing.dead_letter_headers(letter.headers, letter.error_class, letter.error_message)
            row = whole | {"original_value": value, "original_truncated": truncated}
            if not self.sink.produce(self.topic, key, self.codec.encode_one(row), headers):
                self._failed(Refusal(self.topic, key, None, "refused by the producer"), letter)
                continue
            if truncated:
                self.metrics.dead_letters_truncated.inc()
            self.metrics.events_dead_lettered.labels(letter.error_class).inc()

    def refused_outputs(self, refusals: list[Refusal]) -> None:
        """Outputs refused for good (see `streamer.kafka.producer`): any output but a dead letter
        becomes a dead letter holding the bytes it would have written, its source the output
        topic (offset -1: it was never written); a refused dead letter is counted and skipped."""
        letters = []
        for refusal in refusals:
            if refusal.topic == self.topic:
                self._failed(refusal)
                continue
            self.metrics.outputs_refused.labels(refusal.topic, refusal.error).inc()
            reason = f"{refusal.topic} refused this output for good: {refusal.error}"
            letters.append(DeadLetter(refusal.topic, -1, -1, refusal.key, refusal.value, "OutputRefused", reason))
        self.write(letters)

    def _failed(self, refusal: Refusal, letter: DeadLetter | None = None) -> None:
        """Never retried: a permanent refusal would hold the partition forever (see the module)."""
        self.metrics.dead_letters_failed.labels(refusal.error).inc()
        source = "" if letter is None else f" of {letter.topic}[{letter.partition}]@{letter.offset}"
        log.error(
            "dead letter%s refused by %s: %s; skipped",
            source,
            refusal.topic,
            refusal.error,
            extra={"event": "dead_letter_failed", "error": refusal.error},
        )
        if self.stop_on_refusal:
            raise Fatal(
                f"kafka: {refusal.topic} refused a dead letter{source} ({refusal.error}); grant the producer "
                "Write on it and check its topic policy, or set delivery.refused_records: skip"
            )

    def _fit(self, letter: DeadLetter, whole: dict[str, object]) -> tuple[bytes | None, bytes | None, bool]:
        """The original key and value, cut to the room the envelope leaves. The key keeps at least
        half the room, so a huge key cannot push out the whole value."""
        room = max(self.limit_bytes - RECORD_OVERHEAD - self._envelope_bytes(letter, whole) - LENGTH_PREFIXES, 0)
        key, value = letter.key or b"", letter.value or b""
        if len(key) + len(value) <= room:
            return letter.key, letter.value, False
        key_room = min(len(key), max(room - len(value), room // 2))
        return key[:key_room], value[: room - key_room], True

    def _envelope_bytes(self, letter: DeadLetter, whole: dict[str, object]) -> int:
        """Everything but the original bytes: the record without them (and its framing), and the
        headers (a child trace context is as long as its parent's)."""
        record = len(self.codec.encode_one(whole | {"original_value": None}))
        record += len(self.sink.frames.get(self.topic, b""))
        trace = [(name, v) for name, v in letter.headers or () if name in TRACE_HEADERS]
        return record + sum(len(name) + len(v or b"") for name, v in [*self._headers(letter, whole), *trace])

    def _row(self, letter: DeadLetter, failed_at: int) -> dict[str, object]:
        return dead_letter_record(letter, self.worker_id, failed_at)

    def _headers(self, letter: DeadLetter, truncated_from: dict[str, object] | None) -> Headers:
        """The reason as headers; with `truncated_from` (the whole letter's record), also what
        the original was: its size and sha256, as the record has them."""
        headers: Headers = [
            ("streamer.error.class", letter.error_class.encode()),
            ("streamer.error.message", letter.error_message.encode()),
            ("streamer.source", f"{letter.topic}/{letter.partition}/{letter.offset}".encode()),
            ("streamer.worker", self.worker_id.encode()),
        ]
        if truncated_from is not None:
            headers += [
                ("streamer.original.truncated", b"true"),
                ("streamer.original.size", str(truncated_from["original_size"]).encode()),
                ("streamer.original.sha256", str(truncated_from["original_sha256"]).encode()),
            ]
        return headers


def dead_letter_record(letter: DeadLetter, worker_id: str, failed_at: int) -> dict[str, object]:
    """A dead letter as a `schemas/dlq_record.avsc` record, its original whole; also what
    `streamer score` writes to its dead-letter file, where no size limit applies."""
    value = letter.value or b""
    return {
        "original_value": letter.value,
        "original_truncated": False,
        "original_size": len(value),
        "original_sha256": hashlib.sha256(value).hexdigest(),
        "error_class": letter.error_class,
        "error_message": letter.error_message,
        "source_topic": letter.topic,
        "source_partition": letter.partition,
        "source_offset": letter.offset,
        "worker_id": worker_id,
        "failed_at": failed_at,
    }


_PROBE = DeadLetter("probe", 0, 0, None, None, "Probe", "x" * MAX_MESSAGE_CHARS)


def _short_reason(letter: DeadLetter) -> DeadLetter:
    if len(letter.error_message) <= MAX_MESSAGE_CHARS:
        return letter
    return dataclasses.replace(letter, error_message=letter.error_message[: MAX_MESSAGE_CHARS - 1] + "…")
