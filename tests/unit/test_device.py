"""The placement decision, with the GPU lists a CUDA machine would show (this one has none)."""

import pytest

from streamer.device import choose_device, label
from streamer.errors import Fatal

ONE_GPU = ["/physical_device:GPU:0"]


def test_auto_takes_a_gpu_when_tensorflow_sees_one() -> None:
    assert choose_device("auto", ONE_GPU) == "/GPU:0"
    assert choose_device("auto", []) == "/CPU:0"


def test_cpu_is_honoured_even_with_a_gpu() -> None:
    assert choose_device("cpu", ONE_GPU) == "/CPU:0"


def test_gpu_without_one_stops_start_up_with_the_fix() -> None:
    with pytest.raises(Fatal, match="CUDA-enabled tensorflow"):
        choose_device("gpu", [])
    assert choose_device("gpu", ONE_GPU) == "/GPU:0"


def test_metric_label() -> None:
    assert (label("/GPU:0"), label("/CPU:0")) == ("gpu", "cpu")
