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


def score_batch(
    model: LoadedModel,
    events: EventBatch,
    allowed_sizes: tuple[int, ...],
    alert_threshold: float,
    now_ms: int,
    enrichment: Enrichment | None = None,
) -> ScoredBatch:
    """Score `events`, with the entity feature columns of `enrichment` added to their own."""
    inputs = events.with_columns(enrichment.columns) if enrichment else events
    scores = score(model, inputs, allowed_sizes)
    degraded = enrichment.degraded if enrichment else False
    return ScoredBatch(events, scores, scores >= alert_threshold, model.name, model.version, now_ms, degraded)
