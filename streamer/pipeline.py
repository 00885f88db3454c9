"""Scoring one batch: columns → padded tensors → one signature call → scores. No I/O, no loop."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from streamer.features import Enrichment
from streamer.model import LoadedModel
from streamer.records import Columns, EventBatch, ScoredBatch


def padded_size(n: int, allowed: tuple[int, ...]) -> int:
    """Smallest allowed size that holds n; beyond the largest, n itself (a rare extra trace)."""
    for size in allowed:
        if size >= n:
            return size
    return n


def to_tensors(columns: Columns, inputs: dict[str, tf.DType], size: int) -> dict[str, tf.Tensor]:
    """Signature inputs, padded by repeating the last row so padding holds valid values."""
    tensors = {}
    for name, dtype in inputs.items():
        column = columns[name]
        if dtype == tf.string and column.dtype == object:
            column = np.where(column == None, "", column)  # noqa: E711 - elementwise null test
        if size > len(column):
            column = np.concatenate([column, np.repeat(column[-1:], size - len(column))])
        tensors[name] = tf.constant(column, dtype=dtype)
    return tensors


def score(model: LoadedModel, events: EventBatch, allowed_sizes: tuple[int, ...]) -> np.ndarray:
    n = len(events)
    outputs = model.signature(**to_tensors(events.columns, model.inputs, padded_size(n, allowed_sizes)))
    return outputs[model.score_output].numpy()[:n].astype(np.float64)


def score_isolating(
    model: LoadedModel, events: EventBatch, allowed_sizes: tuple[int, ...]
) -> tuple[np.ndarray, dict[int, str]]:
    """Scores, and the rows the model rejects with the reason (row → message).

    A graph that refuses a value (an assertion, check_numerics) fails the whole call; the batch is
    then split in halves until each failing row stands alone, so one poison event costs about
    2·log2(batch) extra calls and never stalls its partition. A non-finite score is a rejection
    too: it cannot be a verdict. Other TensorFlow errors are not about the data and propagate.
    """
    try:
        scores = score(model, events, allowed_sizes)
    except tf.errors.InvalidArgumentError as exc:
        if len(events) == 1:
            return np.full(1, np.nan), {0: f"the model rejected the event: {_reason(exc.message)}"}
        half = len(events) // 2
        left, left_rejected = score_isolating(model, events.take(slice(0, half)), allowed_sizes)
        right, right_rejected = score_isolating(model, events.take(slice(half, None)), allowed_sizes)
        rejected = left_rejected | {half + row: reason for row, reason in right_rejected.items()}
        return np.concatenate([left, right]), rejected
    invalid = np.flatnonzero(~np.isfinite(scores))
    return scores, {int(row): f"the model scored the event {scores[row]}; a score must be finite" for row in invalid}


def _reason(message: str) -> str:
    """The line of a TensorFlow error that names the failed check, not the graph plumbing."""
    plumbing = ("Graph execution error", "Detected at node", "<stack traces", "[[{{node")
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith(plumbing)]
    return (lines[0] if lines else message)[:500]


def score_batch(
    model: LoadedModel,
    events: EventBatch,
    allowed_sizes: tuple[int, ...],
    alert_threshold: float,
    now_ms: int,
    enrichment: Enrichment | None = None,
) -> tuple[ScoredBatch, dict[int, str]]:
    """Score `events` with the entity feature columns of `enrichment` added to their own (the
    ScoredBatch's events carry both). Rows the model rejects are left out of it and returned
    with their reasons, by row of `events`."""
    inputs = events.with_columns(enrichment.columns) if enrichment else events
    scores, rejected = score_isolating(model, inputs, allowed_sizes)
    if rejected:
        accepted = np.ones(len(events), dtype=bool)
        accepted[list(rejected)] = False
        inputs, scores = inputs.take(accepted), scores[accepted]
    degraded = enrichment.degraded if enrichment else False
    scored = ScoredBatch(inputs, scores, scores >= alert_threshold, model.name, model.version, now_ms, degraded)
    return scored, rejected
