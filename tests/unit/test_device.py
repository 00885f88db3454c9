"""The placement decision, with the GPU lists a CUDA machine would show (this one has none)."""

import subprocess
import sys

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


def test_thread_pools_are_sized_before_tensorflow_starts_and_a_late_call_does_not_stop_the_worker() -> None:
    """In a fresh interpreter: the pools take the configured sizes; asked again with other sizes
    once TensorFlow runs (an application that used it first), the worker starts with a warning."""
    script = (
        "import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s')\n"
        "import tensorflow as tf\n"
        "from streamer.device import serving_device\n"
        "from streamer.settings import ModelSettings\n"
        "serving_device(ModelSettings(path='m', device='cpu', intra_op_threads=1, inter_op_threads=2))\n"
        "tf.constant(1.0) + 1.0\n"
        "print('pools', tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
        "print('late', serving_device(ModelSettings(path='m', device='cpu', intra_op_threads=0, inter_op_threads=0)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pools 1 2" in done.stdout
    assert "WARNING TensorFlow was already running" in done.stdout
    assert "its thread pools stay at intra_op 1, inter_op 2" in done.stdout
    assert "late /CPU:0" in done.stdout
