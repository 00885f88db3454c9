import gc
import weakref

from streamer.heap import YOUNG_THRESHOLD, settle


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_settled_objects_leave_the_collectors_generations() -> None:
    kept = _Node()
    settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert all(kept is not obj for obj in gc.get_objects(generation=2))


def test_what_a_swap_dropped_is_freed_by_the_next_settle() -> None:
    model = _Node()
    settle()
    alive = weakref.ref(model)
    del model
    gc.collect()  # an ordinary collection does not look at frozen objects
    assert alive() is not None
    settle()
    assert alive() is None
