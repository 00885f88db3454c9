import socket

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamer.errors import Fatal
from streamer.metrics import LATENCY_BUCKETS, BatchHistogram, HealthServer, Metrics


def test_batch_histogram_exposes_what_observing_one_by_one_does() -> None:
    """Same bucket counts, count and sum in the exposition, values on bounds included."""
    values = np.array([0.0, 0.001, 0.0011, 0.005, 0.3, 10.0, 11.0, -1.0, 0.025, 0.0249])
    by_batch, one_by_one = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("latency_seconds", "doc", LATENCY_BUCKETS, by_batch)
    single = Histogram("latency_seconds", "doc", buckets=LATENCY_BUCKETS, registry=one_by_one)
    for half in (values[:4], values[4:]):
        batched.observe_many(half)
    for value in values.tolist():
        single.observe(value)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    batched_samples, single_samples = samples(by_batch), samples(one_by_one)
    sum_key = ("latency_seconds_sum", "")
    assert batched_samples.pop(sum_key) == pytest.approx(single_samples.pop(sum_key))
    assert batched_samples == single_samples
    assert b"latency_seconds_bucket" in generate_latest(by_batch)


def test_a_taken_port_or_a_bad_host_is_a_one_line_fatal() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Fatal, match=rf"^metrics: cannot listen on 127.0.0.1:{port} \(Address already in use\)"):
            HealthServer(Metrics.create(), "127.0.0.1", port, lambda: (True, "ready"))
    with pytest.raises(Fatal, match=r"^metrics: cannot listen on no-such-host\.invalid:0 .*fix metrics\.host"):
        HealthServer(Metrics.create(), "no-such-host.invalid", 0, lambda: (True, "ready"))
