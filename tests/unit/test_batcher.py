import numpy as np

from streamer.batcher import BatchCost, MicroBatcher
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


def taught(batcher: MicroBatcher, clock: FakeClock, costs: list[tuple[int, float]]) -> None:
    """Batches of these sizes, each finishing this many seconds after it was taken."""
    for offset, (size, seconds) in enumerate(costs):
        batcher.add(events([0] * size, list(range(offset * 10_000, offset * 10_000 + size))))
        batcher.take()
        clock.now += seconds
        batcher.finished()


def test_batch_cost_learns_fixed_and_per_event_seconds() -> None:
    cost = BatchCost()
    for size in [10, 100, 40, 400, 20, 200] * 5:
        cost.observe(size, 0.002 + 0.00001 * size)
    assert abs(cost.fixed_s - 0.002) < 1e-9
    assert abs(cost.per_event_s - 0.00001) < 1e-12
    assert abs(cost.predict(1000) - 0.012) < 1e-9
    assert cost.fitting(0.005, 4096) == 300
    assert cost.fitting(0.001, 4096) == 0  # below the fixed cost nothing fits
    assert cost.fitting(1.0, 4096) == 4096  # the hard bound holds


def test_batch_cost_follows_a_machine_that_slows_down() -> None:
    cost = BatchCost()
    for size in [10, 100] * 20:
        cost.observe(size, 0.001 + 0.00001 * size)
    for size in [10, 100] * 60:
        cost.observe(size, 0.004 + 0.00001 * size)
    assert abs(cost.fixed_s - 0.004) < 2e-4


def test_without_a_target_the_bounds_alone_decide() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(100, 0.005, clock)
    taught(batcher, clock, [(10, 0.050), (50, 0.090)])  # slow batches change nothing
    batcher.add(events([0] * 60, list(range(60))))
    assert batcher.limit() == 100
    assert abs(batcher.wait_s() - 0.005) < 1e-9  # type: ignore[operator]


def test_target_cuts_the_batch_before_max_wait_when_its_cost_would_pass_the_target() -> None:
    clock = FakeClock()
    misses: list[None] = []
    batcher = MicroBatcher(1000, 0.005, clock, target_s=0.010, on_miss=lambda: misses.append(None))
    taught(batcher, clock, [(10, 0.0061), (100, 0.0070), (10, 0.0061), (100, 0.0070)])  # 6 ms + 10 µs/event
    assert not misses  # 6-7 ms from take to finish: within 10 ms
    batcher.add(events([0] * 100, list(range(100))))
    # 10 ms target - 7 ms predicted for 100 events: due 3 ms after the oldest arrived, not 5
    assert abs(batcher.wait_s() - 0.003) < 1e-6  # type: ignore[operator]
    clock.now += 0.003
    assert batcher.ready()
    assert len(batcher.take()) == 100


def test_target_takes_what_fits_and_leaves_the_rest() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(1000, 0.005, clock, target_s=0.010)
    taught(batcher, clock, [(10, 0.0011), (100, 0.0020)] * 2)  # 1 ms + 10 µs/event
    batcher.add(events([0] * 800, list(range(800))), waiting_since=clock.now - 0.004)
    # 6 ms left for the oldest: 1 ms fixed + 500 x 10 µs
    assert batcher.limit() == 500
    assert batcher.ready()
    assert len(batcher.take()) == 500
    assert len(batcher) == 300


def test_past_the_target_batches_grow_for_throughput_and_late_batches_count() -> None:
    clock = FakeClock()
    misses: list[None] = []
    batcher = MicroBatcher(1000, 0.005, clock, target_s=0.010, on_miss=lambda: misses.append(None))
    taught(batcher, clock, [(10, 0.0011), (100, 0.0020)] * 2)
    batcher.add(events([0] * 1500, list(range(1500))), waiting_since=clock.now - 0.012)  # already late
    assert batcher.limit() == 1000  # nothing can make it: full batches drain the queue fastest
    assert len(batcher.take()) == 1000
    clock.now += 0.011
    batcher.finished()
    assert len(misses) == 1


def test_a_late_batch_waits_for_company_up_to_max_wait() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(1000, 0.005, clock, target_s=0.010)
    taught(batcher, clock, [(10, 0.0081), (100, 0.0090)] * 2)  # 8 ms + 10 µs/event
    batcher.add(events([0], [1]))
    assert abs(batcher.wait_s() - 0.00199) < 1e-6  # type: ignore[operator]  # cut in time: 2 ms
    clock.now += 0.003  # the loop was busy past that: the event is late whatever happens now
    assert batcher.limit() == 1000
    assert abs(batcher.wait_s() - 0.002) < 1e-6  # type: ignore[operator]  # max_wait's 5 ms, for throughput


def test_a_dropped_batch_teaches_nothing_and_a_clear_forgets_taken_batches() -> None:
    clock = FakeClock()
    batcher = MicroBatcher(1000, 0.005, clock, target_s=0.010)
    batcher.add(events([0] * 10, list(range(10))))
    batcher.take()
    clock.now += 5.0
    batcher.finished(measured=False)
    assert batcher.cost.observed == 0
    batcher.add(events([0] * 10, list(range(10))))
    batcher.take()
    batcher.clear()
    batcher.finished()  # the rewind dropped it: nothing to learn from
    assert batcher.cost.observed == 0
