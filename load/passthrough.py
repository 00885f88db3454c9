"""The floor under the worker's latency: consume → produce the same bytes, one message at a time.

    .venv/bin/python load/passthrough.py --config configs/local.yaml --input IN --output OUT --group G

No batching, no decode, no model, no Redis; the worker's own consumer and producer settings
(`Settings.consumer_config()` / `producer_config()`), and its checkpoint (flush, then a
synchronous commit, every `delivery.commit_interval_ms`). `make bench` (d) runs it as a process
of its own at the same rates as the worker, so the worker's figures can be read as what it adds
over two Kafka hops, the load generator and the shared cores. It prints `ready` once its
partitions are assigned, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from streamer.settings import Settings, load_settings

READY = "ready"


def pass_through(settings: Settings, source: str, target: str, group: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = Consumer({**settings.consumer_config(), "group.id": group})
    producer = Producer(settings.producer_config())

    def assigned(_consumer: Any, partitions: Any) -> None:
        print(READY, flush=True)

    consumer.subscribe([source], on_assign=assigned)
    interval_s = settings.delivery.commit_interval_ms / 1000
    next_commit = time.monotonic() + interval_s
    try:
        while not stop.is_set():
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                producer.produce(target, message.value(), message.key())
            producer.poll(0)
            if time.monotonic() >= next_commit:
                producer.flush(30)
                if consumer.assignment():
                    consumer.commit(offsets=consumer.position(consumer.assignment()), asynchronous=False)
                next_commit = time.monotonic() + interval_s
    finally:
        producer.flush(30)
        consumer.close()


def spawn(config: Path, source: str, target: str, group: str, timeout_s: float = 60) -> subprocess.Popen[str]:
    """The pass-through as its own process, returned once its partitions are assigned."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--config", str(config), "--input", source, "--output", target, "--group", group],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not readable or process.stdout.readline().strip() != READY:
        process.kill()
        raise SystemExit(f"the pass-through was not assigned its partitions within {timeout_s:.0f} s")
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    pass_through(load_settings(args.config), args.input, args.output, args.group)


if __name__ == "__main__":
    main()
