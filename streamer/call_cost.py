"""`streamer model profile`: what one model call costs at each padded batch size.

A batch is padded up to the next of `batching.allowed_batch_sizes`, so a size's call cost is what
every batch between it and the size below pays. Users choosing those sizes and
`model.intra_op_threads` / `inter_op_threads` for their own model need the curve on their own
hardware (TF Serving's batching guide asks the same of its users): this measures it with the
worker's own call path, device and thread pools, on neutral rows (zeros, empty strings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from streamer.model import LoadedModel

NEUTRAL = {tf.string: "", tf.bool: False}


@dataclass(frozen=True)
class CallCost:
    rows: int
    wall_ms: float  # median
    wall_p90_ms: float
    cpu_ms: float  # median CPU time of the whole process: TensorFlow's pool threads included

    @property
    def per_row_us(self) -> float:
        return self.wall_ms * 1000 / self.rows


def call_costs(model: LoadedModel, sizes: tuple[int, ...], calls: int) -> list[CallCost]:
    """`calls` timed calls per size (after 3 untimed ones), outputs copied out as the worker does."""
    row = {
        name: np.array([NEUTRAL.get(dtype, 0)], dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
        for name, dtype in model.inputs.items()
    }
    costs = []
    for size in sizes:
        walls, cpus = [], []
        for attempt in range(calls + 3):
            wall, cpu = time.perf_counter(), time.process_time()
            outputs = model.run(row, size)
            for tensor in outputs.values():
                tensor.numpy()
            if attempt >= 3:
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
        costs.append(CallCost(size, np.median(walls) * 1000, np.percentile(walls, 90) * 1000, np.median(cpus) * 1000))
    return costs


def table(costs: list[CallCost]) -> str:
    lines = ["rows   wall p50 ms   wall p90 ms   cpu p50 ms   µs per row"]
    lines += [
        f"{c.rows:>4}   {c.wall_ms:>11.3f}   {c.wall_p90_ms:>11.3f}   {c.cpu_ms:>10.3f}   {c.per_row_us:>10.2f}"
        for c in costs
    ]
    return "\n".join(lines)
