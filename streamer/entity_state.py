"""The worker's aggregate state: in memory, per input partition, snapshotted at checkpoints.

Why here and not in Redis: the features an event is scored with must be a pure function of the
events before it in its partition, whatever faults happen. A server-side update skips a replayed
event but answers with the *current* values (later events included), so a replay saw other
values than the first pass. The stream processors' answer, taken here: the partition that holds
the key owns the state (every aggregate is over the input's partition key, see
`streamer.features`), changes it in memory, and makes it durable with snapshots aligned with
the committed input offsets, so recovery restarts from the state *at* the committed offset and
recomputes the rest.

Snapshots. At a checkpoint, before the offsets are committed, each entity changed since the
last snapshot is written with its partition's offset to be committed (its *tag*): the state
after every event of the partition before the tag. One snapshot per (entity, partition)
holds two versions: the new one and the last one whose checkpoint is known to have committed.
If the process dies between the write and the commit, the committed offset is older than the
new tag, and the older version is the state at it (or before it, with none of the entity's
events in between). Reading an entity after an assignment or a rewind takes the newest
version whose tag is at most the partition's *floor*: the first offset this member reads from
it, which is the committed offset (records before the first event read, if any, were dead
letters, which change no state). While a snapshot is written but not committed, the previous
version is kept in memory as the one to write next to the new ones, so at most one
uncommitted version exists per entity.

Entities are read lazily, on the first batch that meets them after an assignment, in that
batch's round trip. An entity that cannot be read (Redis down) is not created: its events are
scored with defaults and not applied (counted as skipped updates), and a later batch reads it
again. Known entities keep updating in memory during an outage; their snapshot waits for the
next checkpoint that can write it, and until then no offsets are committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.aggregates import AggregateGroup
from streamer.records import Columns, EventBatch, has_id
from streamer.snapshots import Address

AddressOf = Callable[[str, int], Address]  # entity id, partition → where its snapshot lives
NO_ENTITY = -2  # the row of an event whose entity id is null or empty: defaults, no state


@dataclass
class Plan:
    """One batch's aggregate work: each event's state row, and the entities to read first."""

    rows: np.ndarray  # per event: state row, -1 while its entity is not in memory
    waiting: np.ndarray  # the events whose entity is not in memory
    pair: np.ndarray  # per waiting event: index of its entity in `partitions`, `ids`, `keys`
    partitions: list[int]  # per entity to read
    ids: list[Any]
    keys: list[Address]  # where the snapshots of the entities to read live


@dataclass(frozen=True)
class Snapshot:
    """Versions to write at one checkpoint: `values`, per entity, the new and the committed one."""

    rows: np.ndarray
    keys: list[Address]
    values: np.ndarray  # (rows, 2 * version_bytes) uint8
    versions: np.ndarray  # the new versions, (rows, 1 + width): tag, then the state
    generations: np.ndarray  # per row, the snapshot generation it was last read from or written to


class EntityState:
    def __init__(self, group: AggregateGroup, time_field: str, key_of: AddressOf) -> None:
        self.group = group
        self.time_field = time_field
        self.key_of = key_of
        self.values = tuple(dict.fromkeys(f.of for f in group.features if f.of))
        self.index: dict[int, dict[Any, int]] = {}  # partition → entity id → row
        self.floors: dict[int, int] = {}  # partition → first offset read since its state was reset
        self._keys: list[Address] = []
        self._state = group.empty(0)
        self._committed = np.empty((0, 1 + group.width))  # tag (NaN: none), state
        self._written = np.empty((0, 1 + group.width))  # written, commit pending (NaN tag: none)
        self._dirty = np.zeros(0, bool)
        self._partition = np.zeros(0, np.int64)
        self._generation = np.zeros(0, np.int64)

    @property
    def version_bytes(self) -> int:
        return 8 * (1 + self.group.width)

    def __len__(self) -> int:
        return len(self._keys)

    def plan(self, events: EventBatch) -> Plan:
        column = events.columns[self.group.entity]
        ids = column if column.dtype == object else column.astype(str).astype(object)
        rows = np.full(len(events), NO_ENTITY, np.int64)
        identified = has_id(column)
        for p in np.unique(events.partitions[identified]).tolist():
            mine = (events.partitions == p) & identified
            if p not in self.floors:
                self.floors[p] = int(events.offsets[mine].min())
            index = self.index.get(p, {})
            rows[mine] = [index.get(i, -1) for i in ids[mine].tolist()]
        waiting = np.flatnonzero(rows == -1)
        pairs: dict[tuple[int, Any], int] = {}  # the id as the column holds it (None too): the index's key
        partitions = events.partitions[waiting].tolist()
        pair = np.array(
            [pairs.setdefault((p, i), len(pairs)) for p, i in zip(partitions, ids[waiting].tolist(), strict=True)],
            dtype=np.int64,
        )
        keys = [self.key_of(str(i), p) for p, i in pairs]
        return Plan(rows, waiting, pair, [p for p, _ in pairs], [i for _, i in pairs], keys)

    def load(self, plan: Plan, replies: list[bytes | None], generations: np.ndarray) -> int:
        """Create the entities to read from what Redis held (and the snapshot generation each
        came from, -1 for none); returns how many had a snapshot."""
        if not plan.keys:
            return 0
        floors = np.array([self.floors[p] for p in plan.partitions], dtype=np.float64)
        chosen = np.full((len(replies), 1 + self.group.width), np.nan)
        chosen[:, 1:] = self.group.empty(len(replies))
        usable = [i for i, r in enumerate(replies) if r is not None and len(r) == 2 * self.version_bytes]
        if usable:
            versions = np.frombuffer(b"".join(replies[i] or b"" for i in usable), "<f8").reshape(len(usable), 2, -1)
            tags = versions[:, :, 0]
            eligible = tags <= floors[usable, None]  # False for NaN: no version
            newest = np.argmax(np.where(eligible, tags, -np.inf), axis=1)
            found = eligible.any(axis=1)
            chosen[np.array(usable)[found]] = versions[found, newest[found]]
        added = self._add(np.array(plan.partitions, np.int64), plan.ids, plan.keys, chosen)
        self._generation[added] = generations
        plan.rows[plan.waiting] = added[plan.pair]
        return int((~np.isnan(chosen[:, 0])).sum())

    def _add(self, partitions: np.ndarray, ids: list[Any], keys: list[Address], versions: np.ndarray) -> np.ndarray:
        start = len(self._keys)
        rows = np.arange(start, start + len(ids))
        for p, entity_id, row in zip(partitions.tolist(), ids, rows.tolist(), strict=True):
            self.index.setdefault(p, {})[entity_id] = row
        self._keys += keys
        if len(self._keys) > len(self._dirty):  # grown by doubling: appends stay cheap
            self._resize(np.arange(len(self._dirty)), max(len(self._keys), 2 * len(self._dirty)))
        self._state[rows], self._committed[rows] = versions[:, 1:], versions
        self._written[rows], self._dirty[rows], self._partition[rows] = np.nan, False, partitions
        return rows

    def _resize(self, kept: np.ndarray, capacity: int) -> None:
        """Rows `kept` become rows 0.. of arrays of `capacity` rows."""
        state, committed = self.group.empty(capacity), np.full((capacity, 1 + self.group.width), np.nan)
        written, dirty, partition = committed.copy(), np.zeros(capacity, bool), np.zeros(capacity, np.int64)
        generation = np.full(capacity, -1, np.int64)
        n = len(kept)
        state[:n], committed[:n], written[:n] = self._state[kept], self._committed[kept], self._written[kept]
        dirty[:n], partition[:n], generation[:n] = self._dirty[kept], self._partition[kept], self._generation[kept]
        self._state, self._committed, self._written = state, committed, written
        self._dirty, self._partition, self._generation = dirty, partition, generation

    def advance(self, events: EventBatch, plan: Plan) -> tuple[Columns, int]:
        """The aggregate columns of the batch; events whose entity is not in memory keep the
        defaults and are not applied. Returns the columns and how many events were skipped."""
        out = self.group.defaults(len(events))
        known = np.flatnonzero(plan.rows >= 0)
        anonymous = int((plan.rows == NO_ENTITY).sum())
        if len(known) == len(events):
            self._advance(events.columns, plan.rows, out)
        elif len(known):
            view = {name: column[known] for name, column in out.items()}
            needed = {f: events.columns[f][known] for f in (self.time_field, *self.values)}
            self._advance(needed, plan.rows[known], view)
            for name, column in view.items():
                out[name][known] = column
        return out, len(events) - len(known) - anonymous

    def _advance(self, columns: Columns, rows: np.ndarray, out: Columns) -> None:
        times = columns[self.time_field].astype(np.float64)
        values = {v: columns[v].astype(np.float64) for v in self.values}
        self.group.advance(self._state, rows, times, values, out)
        self._dirty[rows] = True

    def snapshot(self, offsets: dict[int, int]) -> Snapshot:
        """The changed entities of the partitions in `offsets`, tagged with their offset; they
        count as unchanged from now on (events applied while the snapshot is written change
        them again), until `unwritten` says the write failed."""
        n = len(self._keys)
        owned = np.fromiter(offsets, np.int64, len(offsets))
        rows = np.flatnonzero(self._dirty[:n] & np.isin(self._partition[:n], owned))
        partitions, which = np.unique(self._partition[rows], return_inverse=True)
        versions = np.empty((len(rows), 1 + self.group.width))
        versions[:, 0] = np.array([offsets[p] for p in partitions.tolist()], dtype=np.float64)[which]
        versions[:, 1:] = self._state[rows]
        both = np.ascontiguousarray(np.concatenate([versions, self._committed[rows]], axis=1), dtype="<f8")
        values = both.view(np.uint8).reshape(len(rows), 2 * self.version_bytes)
        keys = [self._keys[r] for r in rows.tolist()]
        self._dirty[rows] = False
        return Snapshot(rows, keys, values, versions, self._generation[rows])

    def written(self, snapshot: Snapshot, generations: np.ndarray) -> None:
        """`snapshot` is in Redis, each entity in the generation given."""
        self._written[snapshot.rows] = snapshot.versions
        self._generation[snapshot.rows] = generations

    def unwritten(self, snapshot: Snapshot) -> None:
        """`snapshot` did not reach Redis: its entities go into the next one. Rows are renumbered
        by `forget`, so this comes before any forget since the snapshot was taken."""
        self._dirty[snapshot.rows] = True

    def committed(self) -> None:
        """The offsets of the written versions are committed: they become the versions to keep."""
        done = ~np.isnan(self._written[:, 0])
        self._committed[done] = self._written[done]
        self._written[done] = np.nan

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the state of these partitions; it is read again from the snapshots when needed."""
        dropped = set(partitions)
        for p in dropped:
            self.index.pop(p, None)
            self.floors.pop(p, None)
        n = len(self._keys)
        kept = np.flatnonzero(~np.isin(self._partition[:n], np.fromiter(dropped, np.int64, len(dropped))))
        if len(kept) == n:
            return
        renumber = np.full(n, -1)
        renumber[kept] = np.arange(len(kept))
        self.index = {p: {i: int(renumber[r]) for i, r in ids.items()} for p, ids in self.index.items()}
        self._keys = [self._keys[r] for r in kept.tolist()]
        self._resize(kept, max(len(kept), 16))
