"""librdkafka errors that waiting can fix, raised as `Retriable` so the tenacity policies of
`streamer.retry` retry them; every other error propagates as it was."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException

from streamer.errors import Retriable

# Codes that mean the broker is away or its coordinator is loading: a later attempt can succeed.
BROKER_AWAY = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)


@contextmanager
def retriable_errors(what: str, transient: Collection[int] = (KafkaError._TIMED_OUT,)) -> Iterator[None]:
    """Errors librdkafka marks retriable, and the codes in `transient`, become `Retriable`."""
    try:
        yield
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.retriable() or error.code() in transient:
            raise Retriable(f"{what}{error.str()}") from exc
        raise
