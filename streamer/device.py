"""Where the model runs: the first GPU TensorFlow sees, else the CPU.

Only the placement is decided here. TensorFlow itself keeps the ops without a GPU kernel (string
lookups of the preprocessing graph) on the CPU under soft placement, which is its default. A GPU
deployment needs an image with the CUDA-enabled `tensorflow` wheel instead of `tensorflow-cpu`
(NVIDIA driver on the host, the NVIDIA container toolkit, and `nvidia.com/gpu: 1` in the pod's
limits); memory growth is turned on, so TensorFlow does not reserve the whole GPU at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from streamer.errors import Fatal
from streamer.settings import ModelSettings

log = logging.getLogger(__name__)

Requested = Literal["auto", "cpu", "gpu"]


def choose_device(requested: Requested, visible_gpus: Sequence[str]) -> str:
    """A TensorFlow device string for `model.device`, given the GPUs TensorFlow lists."""
    if requested == "cpu" or (requested == "auto" and not visible_gpus):
        return "/CPU:0"
    if not visible_gpus:
        raise Fatal(
            "model.device is gpu but TensorFlow sees no GPU; install the CUDA-enabled tensorflow wheel and "
            "the NVIDIA driver, or set model.device: auto"
        )
    return "/GPU:0"


def serving_device(settings: ModelSettings) -> str:
    """`choose_device` for `model.device` in this process, with memory growth set on the GPUs it
    will use and TensorFlow's thread pools sized as `model.*_op_threads` say (0: TensorFlow's
    default, one thread per core). Before any model loads: the pools are fixed once the runtime
    has started."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
    except RuntimeError:  # this process ran TensorFlow before (an embedding application, tests)
        log.warning(
            "TensorFlow was already running in this process: its thread pools stay at intra_op %d, inter_op %d",
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
    gpus = tf.config.list_physical_devices("GPU")
    device = choose_device(settings.device, [g.name for g in gpus])
    if device.startswith("/GPU"):
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    log.info("model device %s (GPUs visible: %d)", device, len(gpus), extra={"event": "device", "device": device})
    return device


def label(device: str) -> str:
    """The `device` label of streamer_model_info: cpu or gpu."""
    return "gpu" if device.startswith("/GPU") else "cpu"
