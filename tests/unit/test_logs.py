import logging

from streamer.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_one_line_per_kind_of_kafka_message_per_interval() -> None:
    clock = Clock()
    keep = RepeatFilter(10.0, clock)
    failure = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {}ms in state UP)"
    fail = "FAIL [rdkafka#consumer-1] [thrd:127.0.0.1:1/bootstrap]: " + failure
    client = "kafka client: " + failure
    let_through = [keep.filter(record("streamer.kafka.consumer", fail.format(i))) for i in range(200)]
    let_through += [keep.filter(record("streamer.kafka.consumer", client.format(i))) for i in range(200)]
    assert sum(let_through) == 1  # the same failure, however librdkafka words and numbers it
    assert keep.filter(record("streamer.kafka.producer", "kafka producer: Broker: Message size too large"))

    clock.now = 10.5
    later = record("streamer.kafka.consumer", client.format(7))
    assert keep.filter(later)
    assert later.getMessage().endswith("(399 more like it held back)")


def test_other_loggers_are_never_held_back() -> None:
    keep = RepeatFilter(10.0, Clock())
    assert all(keep.filter(record("streamer.worker", "dead-lettered in[0]@1: PoisonRecord")) for _ in range(5))
