"""Named retry policies (tenacity), applied at I/O edges only and only to `Retriable` errors.

Each policy is bounded twice, by attempts and by a deadline, logs before it sleeps, and counts
its retries in `streamer_retries_total{operation}`. The pure scoring step is never retried.
"""

from __future__ import annotations

import logging

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from streamer.errors import Retriable
from streamer.metrics import Metrics

log = logging.getLogger(__name__)


def bounded(operation: str, retries: int, deadline_s: float, metrics: Metrics) -> Retrying:
    """Up to `retries` more attempts, all within `deadline_s`; then the last error is raised."""

    def before_sleep(state: RetryCallState) -> None:
        metrics.retries.labels(operation).inc()
        error = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (attempt %d), retrying: %s", operation, state.attempt_number, error)

    return Retrying(
        retry=retry_if_exception_type(Retriable),
        stop=stop_after_attempt(retries + 1) | stop_after_delay(deadline_s),
        wait=wait_exponential(multiplier=0.005, max=deadline_s / 4),
        before_sleep=before_sleep,
        reraise=True,
    )
