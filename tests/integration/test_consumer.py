"""The source's pause against a real broker: librdkafka's pause flags and a group's rebalances."""

import time
from collections.abc import Callable

import pytest

from streamer.kafka.consumer import KafkaSource
from streamer.metrics import Metrics
from tests.integration.conftest import SettingsFactory, produce_payments


def member(config: dict[str, object], topic: str) -> KafkaSource:
    source = KafkaSource(dict(config), topic, lambda partitions: None, lambda partitions: None, Metrics.create())
    source.start()
    return source


def poll_until(sources: list[KafkaSource], done: Callable[[], bool], timeout_s: float = 60) -> int:
    """Poll every source (serving rebalances) until `done()` holds; the records received."""
    count, deadline = 0, time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        count += sum(len(source.poll(500, 0.1)) for source in sources)
    return count


def partitions_read(source: KafkaSource, seconds: float, expected: int | None = None) -> list[int]:
    """The partition of each record `source` gives in `seconds`, or until `expected` arrived."""
    read: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (expected is None or len(read) < expected):
        read += source.poll(500, 0.1).partitions.tolist()
    return read


@pytest.mark.parametrize("assignor", ["cooperative-sticky", "range"])
def test_partitions_handed_over_while_paused_wait_for_resume(make_settings: SettingsFactory, assignor: str) -> None:
    """A member whose input is paused (outputs backed up, or a rewind) takes over the partitions
    of one that leaves: none of their records may arrive before it resumes, all of them after."""
    settings = make_settings(kafka={"consumer": {"partition.assignment.strategy": assignor}})
    config, topic, partitions = settings.consumer_config(), settings.topics.input, settings.topics.partitions
    first, second = member(config, topic), member(config, topic)
    try:
        poll_until(
            [first, second],
            lambda: bool(first.assigned and second.assigned) and len(first.assigned | second.assigned) == partitions,
        )
        first.pause()
        second.close()
        sent = produce_payments(settings, 400)
        early = poll_until([first], lambda: len(first.assigned) == partitions)
        early += len(partitions_read(first, 5))  # time for every partition's first fetch
        assert early == 0
        first.resume()
        assert len(partitions_read(first, 60, expected=len(sent.values))) == len(sent.values)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("assignor", ["cooperative-sticky", "range"])
def test_a_reseat_reads_the_silent_partition_again_and_leaves_the_others_where_they_are(
    make_settings: SettingsFactory, assignor: str
) -> None:
    """After a failed offset fetch the source seats its silent partitions again (librdkafka#5586).
    Under an eager assignor librdkafka takes only a whole assignment: the reseat used to raise
    there; the partitions it keeps must not be read again."""
    settings = make_settings(kafka={"consumer": {"partition.assignment.strategy": assignor}})
    sent = produce_payments(settings, 400)
    source = member(settings.consumer_config(), settings.topics.input)
    try:
        first = partitions_read(source, 60, expected=len(sent.values))
        assert len(first) == len(sent.values)
        source._silent, source._reseat_due = {0}, True  # as a coordinator error on the fetch leaves them
        again = partitions_read(source, 5)
        assert sorted(set(again)) == [0] and len(again) == first.count(0)  # nothing committed: from the start
    finally:
        source.close()
