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

from streamer.model import LoadedModel


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
    """`calls` timed calls per size, outputs copied out as the worker does; every size is warmed
    first, as the worker warms them before serving, so the first size timed pays no start-up."""
    row = model.neutral_row()
    for _ in range(3):
        model.warm_up(sizes)
    walls: dict[int, list[float]] = {size: [] for size in sizes}
    cpus: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(calls):  # sizes interleaved: a noisy second lands on all of them alike
        for size in sizes:
            wall, cpu = time.perf_counter(), time.process_time()
            for tensor in model.run(row, size).values():
                tensor.numpy()
            walls[size].append(time.perf_counter() - wall)
            cpus[size].append(time.process_time() - cpu)
    ms = {size: (np.array(walls[size]) * 1000, np.array(cpus[size]) * 1000) for size in sizes}
    return [
        CallCost(size, float(np.median(wall)), float(np.percentile(wall, 90)), float(np.median(cpu)))
        for size, (wall, cpu) in ms.items()
    ]


def table(costs: list[CallCost]) -> str:
    lines = ["rows   wall p50 ms   wall p90 ms   cpu p50 ms   µs per row"]
    lines += [
        f"{c.rows:>4}   {c.wall_ms:>11.3f}   {c.wall_p90_ms:>11.3f}   {c.cpu_ms:>10.3f}   {c.per_row_us:>10.2f}"
        for c in costs
    ]
    return "\n".join(lines)
