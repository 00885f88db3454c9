"""Per-entity features: aggregates from the worker's own state, stored values from Redis; at
most one round trip per micro-batch; exact under replay; outage-tolerant.

Two kinds of `entity` feature (see `streamer.feature_spec.Entity`):
- *stored* values another system writes (a field of a hash): one HMGET per distinct entity;
- *aggregates* this worker maintains (count, sum, mean, max, time since last; optionally
  decayed): computed in memory (`streamer.aggregates`, the same code as the offline twin) from
  state owned per input partition and snapshotted to Redis at each checkpoint
  (`streamer.entity_state`).

Which aggregates are exact. An aggregate is a pure function of the events before it in its
partition only if all of its entity's events are in that partition, in order: the input topic
must be keyed by the aggregate's entity. So every aggregate must be over the *partition key*
(`features.partition_key`, by default `model.entity_field`): a spec with an aggregate over
another field is refused at start. Under that keying an aggregate equals, bit for bit, the
offline twin over the entity's events in offset order, after any crash, retry, rebalance or
aborted transaction. Stored values are exact as of the moment they are read. (An aggregate
over another entity would need all of that entity's events, spread over partitions other
members own; it needs the input re-keyed by that entity and a worker of its own.)

A batch's round trip reads the stored values and the snapshots of entities the batch meets for
the first time since their partition was assigned (or rewound); a batch whose entities are all
in memory and with no stored features makes none. A checkpoint writes the changed entities'
snapshots before committing offsets: in one more round trip (`FeatureStore.persist`), or a chunk
per loop step from an at-least-once cut (`begin_persist`, `streamer.snapshot_writes`); with a
`quality:` section the scores that wait for labels go with them (`streamer.quality.scores`).

When Redis fails past the retry budget, a circuit breaker opens for `breaker_open_s`, then one
probe decides whether to close it. Meanwhile: stored values are the declared defaults; entities
in memory keep updating and give exact values; entities that would have to be read are scored
with defaults and not updated (`streamer_feature_updates_skipped_total`); every event scored
with a default for want of Redis is flagged `features_degraded`; and checkpoints, unable to write the snapshots,
commit no offsets, so the consumer lag grows until Redis is back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError
from redis.utils import HIREDIS_AVAILABLE

from streamer.aggregates import AggregateGroup, AggregateReplayer, replay_aggregates
from streamer.entity_state import EntityState, Plan, Snapshot
from streamer.errors import Fatal, Retriable
from streamer.feature_settings import FeatureStoreSettings
from streamer.feature_spec import Entity, FeatureSpec
from streamer.metrics import Metrics
from streamer.quality.scores import PendingScores, ScoreLog
from streamer.records import Columns, EventBatch, has_id
from streamer.retry import bounded
from streamer.snapshot_writes import SnapshotWrite
from streamer.snapshots import READ_LUA, SnapshotLayout

__all__ = ["Enrichment", "FeatureStore", "replay_aggregates"]

log = logging.getLogger(__name__)


def stored_key(template: str, entity_id: str) -> str:
    """The hash of an entity's stored values; the snapshots' keys are `streamer.snapshots`'."""
    return template.replace("{id}", entity_id)


class CircuitBreaker:
    """Closed → (a failed, fully retried call) → open for `open_s` → one probe → closed or open."""

    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s = open_s
        self.clock = clock
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allows_call(self) -> bool:
        return self.opened_at is None or self.clock() - self.opened_at >= self.open_s

    def succeeded(self) -> None:
        if self.opened_at is not None:
            log.info("redis circuit breaker closed: Redis answers again", extra={"event": "breaker_closed"})
        self.opened_at = None

    def failed(self) -> None:
        if self.opened_at is None:
            log.warning("redis circuit breaker opened: scoring with default features", extra={"event": "breaker_open"})
        self.opened_at = self.clock()


@dataclass(frozen=True)
class _StoredGroup:
    """The stored features under one key template: one HMGET per distinct entity."""

    entity: str
    template: str
    features: tuple[Entity, ...]


@dataclass(frozen=True)
class Enrichment:
    columns: Columns  # one float32 column per entity feature
    degraded: np.ndarray  # per event: scored with a default because Redis failed


class FeatureStore:
    def __init__(
        self,
        settings: FeatureStoreSettings,
        spec: FeatureSpec,
        metrics: Metrics,
        time_field: str,
        partition_key: str | None,
        clock: Callable[[], float] = time.monotonic,
        offline: bool = False,
        scores: ScoreLog | None = None,
    ) -> None:
        """`partition_key`: the input field the input topic is keyed by; every aggregate must be
        over it. `offline`: aggregates come from the in-process twin over the whole input in
        order, and Redis is only read for stored values, so a backfill or replay reproduces what
        the worker computed and writes nothing. `scores`: events' scores to write with the
        snapshots, for quality (`streamer.quality.scores`)."""
        self.scores = scores
        self.settings = settings
        self.time_field = time_field
        self.features = spec.entity_features()
        self.metrics = metrics
        self.breaker = CircuitBreaker(settings.breaker_open_s, clock)
        self.retrying = bounded("redis", settings.retries, settings.max_stall_ms / 1000, metrics)
        self.replayer = AggregateReplayer(self.features, time_field) if offline else None
        self.state: EntityState | None = None
        groups = AggregateGroup.of(self.features)
        if groups and not offline:
            self.state = self._owned_state(groups, partition_key)
        self.stored: list[_StoredGroup] = []
        for entity, template in dict.fromkeys((f.entity, f.key) for f in self.features if f.key):
            group = tuple(f for f in self.features if f.key == template and f.entity == entity)
            self.stored.append(_StoredGroup(entity, str(template), group))
        self._client: redis.Redis | RedisCluster | None = None
        self._writing: SnapshotWrite | None = None

    def _owned_state(self, groups: list[AggregateGroup], partition_key: str | None) -> EntityState:
        """The one group of aggregates the partitioning makes exact; any other is refused."""
        for group in groups:
            if group.entity != partition_key:
                names = [f.name for f in group.features]
                raise Fatal(
                    f"entity features {names} aggregate over {group.entity!r}, but the input topic is keyed by "
                    f"{partition_key!r} (features.partition_key): only aggregates over the partition key are exact; "
                    f"key the input by {group.entity!r} and set features.partition_key, or serve them as stored values"
                )
        s = self.settings
        self.layout = SnapshotLayout(s.key_prefix, groups[0], s.ttl_s, s.cluster)
        return EntityState(groups[0], self.time_field, self.layout.address)

    def needed_fields(self) -> set[str]:
        return {f.entity for f in self.features} | {f.of for f in self.features if f.of} | {self.time_field}

    def check_schema(self, field_types: dict[str, Any]) -> None:
        missing = sorted(self.needed_fields() - set(field_types))
        if missing:
            raise Fatal(f"entity features need input fields {missing}, which the input schema lacks")

    @property
    def client(self) -> redis.Redis | RedisCluster:
        if self._client is None:
            self._client = self.settings.client()
        return self._client

    def start(self) -> None:
        """Check Redis at start-up; unreachable is not fatal (the breaker serves defaults)."""
        if not self.features:
            return
        if not HIREDIS_AVAILABLE:
            log.warning("hiredis is not installed: redis replies parsed in Python cost ~3x (pip install hiredis)")
        try:
            self.client.ping()
            if self.state is not None:
                self.client.script_load(READ_LUA)
        except redis.RedisError as exc:
            log.warning("redis unreachable at start (%s); serving defaults until it answers", exc)
            self.breaker.failed()

    def enrich(self, events: EventBatch) -> Enrichment:
        """The entity feature columns of a batch: the values before each event, in batch order.
        Aggregates are applied to the state as a side effect (batches must come in order)."""
        if not self.features or not len(events):
            return Enrichment({}, np.zeros(len(events), bool))
        columns = self._defaults((f for f in self.features if f.key), len(events))
        if self.replayer is not None:
            columns |= self.replayer.replay(events.columns)
        plan = self.state.plan(events) if self.state is not None else None
        reads = bool(self.stored) or (plan is not None and len(plan.keys) > 0)
        failed = reads and not self._read(events, plan, columns)
        degraded = np.full(len(events), failed and bool(self.stored))  # stored values defaulted
        if plan is not None:
            assert self.state is not None
            aggregates, skipped = self.state.advance(events, plan)
            columns |= aggregates
            degraded |= plan.rows == -1  # not in memory, not read: defaults
            if skipped:
                self.metrics.feature_updates_skipped.inc(skipped)
        self.metrics.features_degraded.inc(int(degraded.sum()))
        return Enrichment(columns, degraded)

    def _read(self, events: EventBatch, plan: Plan | None, columns: Columns) -> bool:
        """Stored values into `columns` and snapshots into the state: False if Redis failed."""
        if not self.breaker.allows_call():
            return False
        try:
            stored, snapshots = self.retrying(self._round_trip, events, plan)
        except Retriable as exc:
            log.warning("redis failed after retries: %s", exc)
            self._failed()
            return False
        self._succeeded()
        columns |= stored
        if plan is not None and self.state is not None and plan.keys:
            values, generations = snapshots
            found = self.state.load(plan, values, generations)
            self.metrics.cache_hits.inc(found)
            self.metrics.cache_misses.inc(len(values) - found)
        return True

    def _failed(self) -> None:
        self.breaker.failed()
        self.metrics.feature_breaker_open.set(1)

    def _succeeded(self) -> None:
        self.breaker.succeeded()
        self.metrics.feature_breaker_open.set(0)

    @staticmethod
    def _defaults(features: Iterable[Entity], n: int) -> Columns:
        return {f.name: np.full(n, f.default, np.float32) for f in features}

    def _round_trip(self, events: EventBatch, plan: Plan | None) -> tuple[Columns, Any]:
        """Everything Redis serves for this batch, in one pipeline: one round trip. Only reads,
        so a retried round trip changes nothing."""
        pipe = self.client.pipeline(transaction=False)
        snapshots: Any = ([], np.zeros(0, np.int64))
        if plan is not None and plan.keys:
            read_snapshots = self.layout.queue_read(pipe, plan.keys)
            calls = len(pipe)
        else:
            calls = 0
        columns = self._defaults((f for f in self.features if f.key), len(events))
        readers = [self._queue_stored(pipe, stored, events, columns) for stored in self.stored]
        try:
            replies = pipe.execute()
        except NoScriptError as exc:  # restarted or SCRIPT FLUSHed since start: load it, read again
            with contextlib.suppress(redis.RedisError):  # if this fails too, the retry says why
                self.client.script_load(READ_LUA)
            raise Retriable("redis had lost the snapshot read script; loaded it again") from exc
        except redis.RedisError as exc:  # down, timed out, loading, read-only replica, …
            raise Retriable(f"redis: {exc}") from exc
        if calls:
            snapshots = read_snapshots(replies[:calls])
        start = calls
        for count, read in readers:
            read(replies[start : start + count])
            start += count
        return columns, snapshots

    def persist(self, offsets: dict[int, int]) -> None:
        """Write the snapshots of the entities changed since the last one, tagged with `offsets`
        (per partition, the offset about to be committed), and the scores that wait for labels,
        in one round trip. Raises `Retriable` if Redis cannot take the snapshots: the checkpoint
        must then not commit those offsets. Scores that cannot be written wait for the next one."""
        write = self.begin_persist(offsets)
        if write is not None:
            write.finish()

    def begin_persist(self, offsets: dict[int, int]) -> SnapshotWrite | None:
        """What `persist` writes, taken now and written by `SnapshotWrite.step`; None if nothing
        changed. A write still under way (a cut a whole checkpoint overtakes) is abandoned: what
        it had not confirmed goes into this one."""
        self._abandon_write()
        snapshot = self.state.snapshot(offsets) if self.state is not None else None
        snapshot = snapshot if snapshot is not None and snapshot.keys else None
        scores = self.scores.take() if self.scores is not None else None
        if snapshot is None and scores is None:
            return None
        self._writing = SnapshotWrite(snapshot, scores, self._write, self.state, self.scores)
        return self._writing

    def _abandon_write(self) -> None:
        if self._writing is not None:
            self._writing.abandon()
            self._writing = None

    def _write(self, snapshot: Snapshot | None, rows: slice, scores: PendingScores | None) -> np.ndarray | None:
        """`rows` of `snapshot` and `scores` in one round trip, through the breaker and the retry
        budget; the generation each row went to."""
        if not self.breaker.allows_call():
            raise Retriable("redis circuit breaker open: state snapshot not written")
        try:
            generations = self.retrying(self._write_once, snapshot, rows, scores)
        except Retriable:
            self._failed()
            raise
        self._succeeded()
        return generations

    def _write_once(self, snapshot: Snapshot | None, rows: slice, scores: PendingScores | None) -> np.ndarray | None:
        pipe = self.client.pipeline(transaction=False)
        generations = None
        if snapshot is not None:
            keys, known, values = snapshot.keys[rows], snapshot.generations[rows], snapshot.values[rows]
            generations = self.layout.queue_write(pipe, keys, known, values)
        if scores is not None:
            scores.queue_write(pipe)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise Retriable(f"redis: {exc}") from exc
        return generations

    def committed(self) -> None:
        """The offsets the last written snapshots were tagged with are committed."""
        if self.state is not None:
            self.state.committed()

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked, lost or rewound: their state is read again from the snapshots. A
        snapshot write under way is abandoned first (forgetting renumbers the entities)."""
        self._abandon_write()
        if self.state is not None:
            self.state.forget(partitions)

    def _queue_stored(
        self, pipe: Any, group: _StoredGroup, events: EventBatch, columns: Columns
    ) -> tuple[int, Callable[[list[Any]], None]]:
        ids = events.columns[group.entity]
        identified = np.flatnonzero(has_id(ids))  # the rest keep defaults
        unique, inverse = np.unique(ids[identified].astype(str), return_inverse=True)
        fields = [f.field or f.name for f in group.features]
        for entity_id in unique.tolist():
            pipe.hmget(stored_key(group.template, entity_id), fields)

        def read(replies: list[Any]) -> None:
            table = np.array(replies, dtype=object).reshape(len(unique), len(fields))[inverse]
            for j, feature in enumerate(group.features):
                column = columns[feature.name][identified]
                self._fill(column, table[:, j], feature.default)
                columns[feature.name][identified] = column

        return len(unique), read

    def _fill(self, column: np.ndarray, replies: np.ndarray, default: float) -> None:
        """Write HMGET replies into `column`; absent values (nil, empty) keep the default."""
        present = (replies != b"") & (replies != None)  # noqa: E711
        self.metrics.cache_hits.inc(int(present.sum()))
        self.metrics.cache_misses.inc(int((~present).sum()))
        if present.any():
            column[present] = replies[present].astype(np.float64)  # float() parses bytes
        column[~present] = default
