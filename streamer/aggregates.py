"""The arithmetic of entity aggregates (count, sum, mean, max, time since last; optionally
decayed), vectorised over a batch, shared by the worker and the offline twin.

One function, `AggregateGroup.advance`, computes every aggregate value for the worker
(`streamer.entity_state`), for training data and for `streamer score` (`replay_aggregates`),
so online and offline values are the same doubles by construction, not by keeping two copies
in step. An entity's events must apply in order, and a decayed count is a sequential recurrence
whose rounding depends on that order, so the batch is walked in *steps*: step k holds the k-th
event of every entity in the batch, and within a step each entity appears once, so a step is a
handful of numpy operations over distinct state rows. Steps are few (the most events any one
entity has in the batch), and each does exactly the float operations a row-by-row loop would:
additions, products and divisions are correctly rounded in numpy as in Python, and the decay
`0.5 ** x` is Python's own power, not a SIMD approximation that could differ by an ulp.

State, one row per entity, float64 columns: `ts` (time of its latest event, NaN before any),
then per aggregate: count and sum (count, sum, mean) or maximum and a set flag (max); since_last
needs only `ts`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.feature_spec import Entity
from streamer.records import Columns, has_id

TS = 0  # the state column of the entity's latest event time


def _widths(feature: Entity) -> int:
    return 0 if feature.aggregate == "since_last" else 2


@dataclass(frozen=True)
class AggregateGroup:
    """The aggregates over one entity field, and where each keeps its state."""

    entity: str
    features: tuple[Entity, ...]
    columns: tuple[int, ...] = field(init=False)  # first state column of each feature

    def __post_init__(self) -> None:
        starts, column = [], 1
        for feature in self.features:
            starts.append(column)
            column += _widths(feature)
        object.__setattr__(self, "columns", tuple(starts))

    @classmethod
    def of(cls, features: tuple[Entity, ...]) -> list[AggregateGroup]:
        """One group per entity field, in the order the spec names them."""
        aggregates = [f for f in features if f.aggregate]
        entities = dict.fromkeys(f.entity for f in aggregates)
        return [cls(entity, tuple(f for f in aggregates if f.entity == entity)) for entity in entities]

    @property
    def width(self) -> int:
        return 1 + sum(_widths(f) for f in self.features)

    @property
    def digest(self) -> str:
        """Names the state layout: a snapshot written for other aggregates is never read as these."""
        definition = repr([(f.name, f.aggregate, f.of, f.half_life_s) for f in self.features])
        return hashlib.blake2b(definition.encode(), digest_size=4).hexdigest()

    def empty(self, rows: int) -> np.ndarray:
        state = np.zeros((rows, self.width))
        state[:, TS] = np.nan
        for feature, column in zip(self.features, self.columns, strict=True):
            if feature.aggregate == "max":
                state[:, column] = np.nan
        return state

    def defaults(self, n: int) -> Columns:
        return {f.name: np.full(n, f.default, np.float32) for f in self.features}

    def advance(
        self, state: np.ndarray, rows: np.ndarray, times: np.ndarray, values: Mapping[str, np.ndarray], out: Columns
    ) -> None:
        """Events in order: event i belongs to state row `rows[i]`, happened at `times[i]` (ms)
        and carries `values[field][i]`. Writes the value before each event into `out[name][i]`
        (left as is where undefined: the default), then applies the event to `state`."""
        half_lives = {f.half_life_s for f in self.features if f.half_life_s}
        for step in _steps(rows):
            entity, t = rows[step], times[step]
            current = state[entity]  # one gather and one scatter per step, not per aggregate
            ts = current[:, TS]
            later = t > ts  # False where ts is NaN: no previous event
            elapsed = (t - ts)[later]
            decays = {}
            for half_life in half_lives:
                decays[half_life] = np.ones(len(step))
                decays[half_life][later] = _halvings(elapsed / (half_life * 1000))
            for feature, column in zip(self.features, self.columns, strict=True):
                v = values[feature.of][step] if feature.of else None
                decay = decays[feature.half_life_s] if feature.half_life_s else None
                self._apply(feature, current, column, step, t, ts, v, decay, out[feature.name])
            current[:, TS] = np.where(later | np.isnan(ts), t, ts)
            state[entity] = current

    @staticmethod
    def _apply(
        feature: Entity,
        current: np.ndarray,
        column: int,
        step: np.ndarray,
        t: np.ndarray,
        ts: np.ndarray,
        v: np.ndarray | None,
        decay: np.ndarray | None,
        out: np.ndarray,
    ) -> None:
        op = feature.aggregate
        if op == "since_last":
            seen = ~np.isnan(ts)
            out[step[seen]] = (t[seen] - ts[seen]) / 1000
            return
        v = np.zeros(len(step)) if v is None else v
        if op == "max":
            maximum, is_set = current[:, column], current[:, column + 1] == 1
            out[step[is_set]] = maximum[is_set]
            current[:, column] = np.where(~is_set | (v > maximum), v, maximum)
            current[:, column + 1] = 1
            return
        count, total = current[:, column], current[:, column + 1]
        if decay is not None:  # x * 1.0 == x: skipping the product changes no bit
            count, total = count * decay, total * decay
        if op == "count":
            out[step] = count
        elif op == "sum":
            out[step] = total
        else:  # mean
            positive = count > 0
            out[step[positive]] = total[positive] / count[positive]
        current[:, column], current[:, column + 1] = count + 1, total + v


def _halvings(exponents: np.ndarray) -> np.ndarray:
    """0.5 ** x with Python's (libm's) pow: numpy's vectorised power may round differently."""
    return np.array([0.5**x for x in exponents.tolist()], dtype=np.float64)


def _steps(rows: np.ndarray) -> list[np.ndarray]:
    """Event indices split into steps: step k holds, in batch order, the k-th event of each row."""
    n = len(rows)
    if not n:
        return []
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_rank = np.argsort(rank, kind="stable")
    return np.split(by_rank, np.cumsum(np.bincount(rank))[:-1])


class RowIndex:
    """Entity id → state row, growing as new ids arrive; the state array grows with it."""

    def __init__(self, group: AggregateGroup) -> None:
        self.group = group
        self.index: dict[Any, int] = {}
        self.state = group.empty(0)

    def rows(self, ids: list[Any]) -> np.ndarray:
        found = [self.index.setdefault(i, len(self.index)) for i in ids]
        if len(self.index) > len(self.state):
            grown = self.group.empty(max(len(self.index), 2 * len(self.state)))
            grown[: len(self.state)] = self.state
            self.state = grown
        return np.array(found, dtype=np.int64)


class AggregateReplayer:
    """The worker's aggregates computed in process over a stream in event order: the offline
    twin (training data, `streamer score`). State persists across calls."""

    def __init__(self, features: tuple[Entity, ...], time_field: str) -> None:
        self.time_field = time_field
        self.groups = [RowIndex(group) for group in AggregateGroup.of(features)]

    def replay(self, columns: Columns) -> Columns:
        n = len(columns[self.time_field])
        times = columns[self.time_field].astype(np.float64)
        out: Columns = {}
        for index in self.groups:
            group = index.group
            known = np.flatnonzero(has_id(columns[group.entity]))  # no entity: the default, no state
            values = {f.of: columns[f.of][known].astype(np.float64) for f in group.features if f.of}
            unique, inverse = np.unique(columns[group.entity][known].astype(str), return_inverse=True)
            rows = index.rows(unique.tolist())[inverse]
            columns_of_group = group.defaults(n)
            view = {name: column[known] for name, column in columns_of_group.items()}
            group.advance(index.state, rows, times[known], values, view)
            for name, column in view.items():
                columns_of_group[name][known] = column
            out |= columns_of_group
        return out


def replay_aggregates(features: tuple[Entity, ...], columns: Columns, time_field: str) -> Columns:
    """Aggregates over a whole training set in one go (see `AggregateReplayer`)."""
    return AggregateReplayer(features, time_field).replay(columns)
