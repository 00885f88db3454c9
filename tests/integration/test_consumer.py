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


def poll_for(source: KafkaSource, seconds: float) -> int:
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        count += len(source.poll(500, 0.1))
    return count


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
        early += poll_for(first, 5)  # time for every partition's first fetch
        assert early == 0
        first.resume()
        received = 0
        deadline = time.monotonic() + 60
        while received < len(sent.values) and time.monotonic() < deadline:
            received += len(first.poll(500, 0.1))
        assert received == len(sent.values)
    finally:
        first.close()
        second.close()
