import numpy as np

from streamer.batcher import MicroBatcher
from streamer.records import EventBatch


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def events(partitions: list[int], offsets: list[int]) -> EventBatch:
    return EventBatch(
        {"x": np.array(offsets, dtype=np.float64)},
        np.array(partitions, dtype=np.int32),
        np.array(offsets, dtype=np.int64),
        [None] * len(offsets),
    )


def test_ready_when_full() -> None:
    batcher = MicroBatcher(4, 1.0, FakeClock())
    batcher.add(events([0, 0, 0], [1, 2, 3]))
    assert not batcher.ready()
    assert batcher.room() == 1
    batcher.add(events([1], [7]))
    assert batcher.ready()


def test_ready_when_oldest_event_has_waited_max_wait() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(100, 0.005, clock)
    assert batcher.wait_s() is None
    batcher.add(events([0], [1]))
    clock.now += 0.003
    batcher.add(events([0], [2]))
    assert not batcher.ready()
    assert abs(batcher.wait_s() - 0.002) < 1e-9  # type: ignore[operator]
    clock.now += 0.002
    assert batcher.ready()


def test_events_that_waited_in_the_consumer_count_that_wait() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(100, 0.005, clock)
    batcher.add(events([0], [1]), waiting_since=clock.now - 0.003)  # queued while the loop was busy
    assert abs(batcher.wait_s() - 0.002) < 1e-9  # type: ignore[operator]
    batcher.take()
    batcher.add(events([0], [2]), waiting_since=clock.now - 0.010)
    assert batcher.ready()
    batcher.take()
    batcher.add(events([0], [3]), waiting_since=clock.now + 1)  # a clock read later never delays
    assert abs(batcher.wait_s() - 0.005) < 1e-9  # type: ignore[operator]


def test_take_returns_oldest_and_keeps_remainder_with_its_deadline() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(2, 0.005, clock)
    batcher.add(events([0, 0, 1], [1, 2, 5]))
    head = batcher.take()
    assert list(head.offsets) == [1, 2]
    assert len(batcher) == 1
    clock.now += 0.005
    assert batcher.ready()
    assert list(batcher.take().columns["x"]) == [5.0]
    assert batcher.wait_s() is None


def test_drop_partitions_and_lowest_pending() -> None:
    batcher = MicroBatcher(100, 1.0, FakeClock())
    batcher.add(events([0, 1, 0], [10, 20, 11]))
    batcher.add(events([1, 2], [21, 30]))
    assert batcher.lowest_pending_offsets() == {0: 10, 1: 20, 2: 30}
    assert batcher.drop_partitions([1]) == 2
    assert batcher.lowest_pending_offsets() == {0: 10, 2: 30}
    assert len(batcher) == 3
    batcher.drop_partitions([0, 2])
    assert batcher.wait_s() is None
