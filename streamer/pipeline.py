"""Scoring one batch: columns → padded tensors → one signature call → the selected outputs. No
I/O, no loop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import tensorflow as tf

from streamer.features import Enrichment
from streamer.lifecycle import Serving, entity_buckets, routed
from streamer.missing import presence_input, raw_column
from streamer.model import LoadedModel
from streamer.records import Columns, EventBatch, Rejection, Rejections, ScoredBatch, has_id


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
        column = raw_column(columns, name, dtype)
        if size > len(column):
            column = np.concatenate([column, np.repeat(column[-1:], size - len(column))])
        tensors[name] = tf.constant(column, dtype=dtype)
    return tensors


Values = dict[str, np.ndarray]  # selected signature outputs, by name, a row per event


def score(model: LoadedModel, events: EventBatch, allowed_sizes: tuple[int, ...]) -> Values:
    """The outputs `model.selection` names, padding cut: scalars as [n], vectors and top-k as
    [n, k]; numbers as float64 or int64, string ids as Python strings."""
    n = len(events)
    outputs = model.run(to_tensors(events.columns, model.inputs, padded_size(n, allowed_sizes)))
    values: Values = {}
    for selection in model.selection:
        for name in selection.names:
            column = outputs[name].numpy()[:n]
            if selection.kind == "scalar":
                column = column.reshape(n)
            if column.dtype == object:  # tf.string: bytes
                values[name] = np.vectorize(bytes.decode, otypes=[object])(column) if column.size else column
            else:
                values[name] = column.astype(np.float64 if column.dtype.kind == "f" else np.int64)
    return values


def headline(model: LoadedModel, values: Values) -> np.ndarray:
    """One number per event, from the first selected output (a vector's or top-k's largest): what
    drift histograms and shadow_score record."""
    numbers = values[model.selection[0].numbers]
    return (numbers.max(axis=1) if numbers.ndim == 2 else numbers).astype(np.float64)


def _take(values: Values, rows: np.ndarray | slice) -> Values:
    return {name: column[rows] for name, column in values.items()}


def entity_fields(entity_field: str, model: LoadedModel) -> tuple[str, ...]:
    """Every input field whose id keys state or routing: `event.missing_entity` covers them all."""
    return tuple(dict.fromkeys((entity_field, *(f.entity for f in model.spec.entity_features()))))


def needed_inputs(serving: Serving) -> dict[str, tf.DType]:
    """The raw inputs `null_inputs` checks: every signature input, a null allowed only where it has
    a presence input, and the values aggregates sum, where a null is never allowed."""
    needed: dict[str, tf.DType] = {}
    for model in (serving.primary, serving.candidate):
        needed |= model.inputs if model is not None else {}
    for feature in serving.primary.spec.entity_features():
        if feature.of:
            needed[feature.of] = tf.float64
            needed.pop(presence_input(feature.of), None)
    return needed


def admit(
    events: EventBatch,
    entity_fields: Iterable[str],
    policy: Literal["defaults", "dead_letter"],
    needed: Mapping[str, tf.DType],
) -> tuple[EventBatch, Rejections]:
    """The events that may go on to the feature stage, and the others with their reasons: a null
    in a `needed` input, or under `event.missing_entity: dead_letter` a null or empty id in one of
    `entity_fields`. Under `defaults` those go on, and the feature store serves them defaults
    without touching any entity's state. Refused before the feature stage, so a refused event
    never updates an aggregate."""
    refused = null_inputs(events.columns, needed)
    if policy == "dead_letter":
        refused |= missing_entities(events.columns, entity_fields)
    return (_without(events, refused)[0] if refused else events), refused


def missing_entities(columns: Columns, fields: Iterable[str]) -> Rejections:
    """Rows with a null or empty id in one of `fields`."""
    refused: Rejections = {}
    for name in fields:
        column = columns[name]
        for row in np.flatnonzero(~has_id(column)).tolist():
            missing = "null" if column[row] is None else "empty"
            refused.setdefault(row, Rejection("MissingEntity", f"entity field {name} is {missing}"))
    return refused


def null_inputs(columns: Columns, inputs: Mapping[str, tf.DType]) -> Rejections:
    """Rows with a null in an input of `columns` that no feature fills (it has no presence input):
    a placeholder would score every such event alike, silently."""
    refused: Rejections = {}
    for name in inputs:
        column = columns.get(name)
        if column is None or column.dtype != object or presence_input(name) in inputs:
            continue
        for row in np.flatnonzero(column == None).tolist():  # noqa: E711 - elementwise null test
            reason = f"field {name} is null, and nothing takes a null there (a feature's missing:, never an aggregate)"
            refused.setdefault(row, Rejection("NullInput", reason))
    return refused


def _without(events: EventBatch, rows: Iterable[int]) -> tuple[EventBatch, np.ndarray]:
    """`events` without `rows`, and the row in `events` of each one kept."""
    kept = np.ones(len(events), dtype=bool)
    kept[list(rows)] = False
    return events.take(kept), np.flatnonzero(kept)


def score_isolating(
    model: LoadedModel, events: EventBatch, allowed_sizes: tuple[int, ...]
) -> tuple[Values, dict[int, str]]:
    """The selected outputs of the rows the model accepts, in order, and the rows it rejects with
    the reason (row → message).

    A graph that refuses a value (an assertion, check_numerics) fails the whole call; the batch is
    then split in halves until each failing row stands alone, so one poison event costs about
    2·log2(batch) extra calls and never stalls its partition. A non-finite output is a rejection
    too: it cannot be a verdict. Other TensorFlow errors are not about the data and propagate.
    """
    if not len(events):  # every event of the batch was refused before the model
        return _no_rows(model), {}
    try:
        values = score(model, events, allowed_sizes)
    except tf.errors.InvalidArgumentError as exc:
        if len(events) == 1:
            return _no_rows(model), {0: f"the model rejected the event: {_reason(exc.message)}"}
        half = len(events) // 2
        left, left_rejected = score_isolating(model, events.take(slice(0, half)), allowed_sizes)
        right, right_rejected = score_isolating(model, events.take(slice(half, None)), allowed_sizes)
        rejected = left_rejected | {half + row: reason for row, reason in right_rejected.items()}
        return _concat([left, right]), rejected
    rejected = _non_finite(values)
    return (_take(values, _kept(len(events), rejected)) if rejected else values), rejected


def _no_rows(model: LoadedModel) -> Values:
    return {name: np.empty(0) for selection in model.selection for name in selection.names}


def _kept(n: int, rejected: Iterable[int]) -> np.ndarray:
    """The rows of 0..n-1 not in `rejected`, in order."""
    return np.delete(np.arange(n), np.fromiter(rejected, dtype=np.int64))


def _concat(parts: list[Values]) -> Values:
    """Outputs of consecutive row ranges as one; a range without rows has no shape to agree on."""
    joined: Values = {}
    for name in parts[0]:
        columns = [part[name] for part in parts if len(part[name])]
        joined[name] = np.concatenate(columns) if columns else parts[0][name]
    return joined


def _non_finite(values: Values) -> dict[int, str]:
    """Rows where a number the model output is NaN or infinite: it cannot be a verdict."""
    reasons: dict[int, str] = {}
    for name, column in values.items():
        if column.dtype.kind == "f":
            bad = ~np.isfinite(column.reshape(len(column), -1)).all(axis=1)
            for row in np.flatnonzero(bad).tolist():
                reasons.setdefault(row, f"the model output {name} = {column[row]} for the event; it must be finite")
    return reasons


def _reason(message: str) -> str:
    """The line of a TensorFlow error that names the failed check, not the graph plumbing."""
    plumbing = ("Graph execution error", "Detected at node", "<stack traces", "[[{{node")
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith(plumbing)]
    return (lines[0] if lines else message)[:500]


def score_batch(
    serving: Serving,
    events: EventBatch,
    allowed_sizes: tuple[int, ...],
    now_ms: int,
    enrichment: Enrichment | None,
    entity_field: str,
) -> tuple[ScoredBatch, Rejections]:
    """Score `events` with the entity feature columns of `enrichment` added to their own (the
    ScoredBatch's events carry both). The primary decides, except for entities routed to the
    canary; the shadow's headline numbers are recorded apart. Rows with a null input or that the
    model rejects are left out and returned with their reasons, by row of `events`."""
    inputs = events.with_columns(enrichment.columns) if enrichment else events
    refused = null_inputs(inputs.columns, needed_inputs(serving))  # a swap since `admit` may need more
    remaining, rows = _without(inputs, refused) if refused else (inputs, np.arange(len(inputs)))
    degraded = enrichment.degraded[rows] if enrichment else np.zeros(len(remaining), bool)
    scored, rejected = _decide(serving, remaining, allowed_sizes, now_ms, degraded, entity_field)
    return scored, refused | {int(rows[row]): refusal for row, refusal in rejected.items()}


def _decide(
    serving: Serving,
    inputs: EventBatch,
    allowed_sizes: tuple[int, ...],
    now_ms: int,
    degraded: np.ndarray,
    entity_field: str,
) -> tuple[ScoredBatch, Rejections]:
    n = len(inputs)
    candidate = serving.candidate
    shares: list[tuple[LoadedModel, np.ndarray]] = [(serving.primary, np.arange(n))]
    shadow_scores = None
    if candidate is not None:
        buckets = entity_buckets(inputs.columns[entity_field])
        canary = routed(buckets, serving.canary_share)
        shares = [(serving.primary, np.flatnonzero(~canary)), (candidate, np.flatnonzero(canary))]
        shadowed = np.flatnonzero(routed(buckets, serving.shadow_share))
        if len(shadowed):
            shadow_scores = np.full(n, np.nan)  # NaN: not shadowed, or the candidate refused it
            values, refused = score_isolating(candidate, inputs.take(shadowed), allowed_sizes)
            shadow_scores[shadowed[_kept(len(shadowed), refused)]] = headline(candidate, values)
    reasons: dict[int, str] = {}
    parts: list[Values] = []
    kept: list[np.ndarray] = []
    versions: list[np.ndarray] = []
    for model, rows in shares:
        values, refused = score_isolating(model, inputs.take(rows), allowed_sizes)
        reasons |= {int(rows[row]): reason for row, reason in refused.items()}
        parts.append(values)
        kept.append(rows[_kept(len(rows), refused)])
        versions.append(np.full(len(kept[-1]), model.version, dtype=np.int64))
    accepted = np.concatenate(kept)
    order = np.argsort(accepted, kind="stable")  # back to input order across the canary's split
    values = _take(_concat(parts), order)
    accepted = accepted[order]
    everyone = len(accepted) == n  # the common case: no copy of the batch
    scored = ScoredBatch(
        inputs if everyone else inputs.take(accepted),
        values,
        headline(serving.primary, values),
        serving.primary.name,
        np.concatenate(versions)[order],
        now_ms,
        degraded if everyone else degraded[accepted],
        shadow_scores if shadow_scores is None or everyone else shadow_scores[accepted],
        None if shadow_scores is None or candidate is None else candidate.version,
    )
    return scored, {row: Rejection("ModelRejected", reason) for row, reason in reasons.items()}
