"""Per-entity features from Redis: one round trip per micro-batch, replay-safe, outage-tolerant.

Two kinds of `entity` feature (see `streamer.preprocess.Entity`):
- *stored* values another system writes (a field of a hash): one HMGET per distinct entity;
- *aggregates* this worker maintains (count, sum, mean, max, time since last; optionally
  decayed): one Lua call per entity field computes, for each event in order, the value before
  it, and applies its update, all on the server.

Everything goes out in one pipeline: one round trip per batch. Each aggregate hash keeps, per
input partition, the last applied offset, so an event replayed after a crash is not counted
twice. When Redis fails past the retry budget, a circuit breaker opens: events are scored with
the declared defaults and flagged `features_degraded`, aggregate updates are skipped (and
counted), and after `breaker_open_s` one probe decides whether to close it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster, key_slot
from redis.commands.core import Script
from redis.utils import HIREDIS_AVAILABLE

from streamer.errors import Fatal, Retriable
from streamer.metrics import Metrics
from streamer.preprocess import Entity, FeatureSpec
from streamer.records import Columns, EventBatch, has_id
from streamer.retry import bounded
from streamer.settings import FeatureStoreSettings

log = logging.getLogger(__name__)

# KEYS: the aggregate hashes of the batch's distinct entities.
# ARGV: ttl_ms, apply (1|0), n_aggregates, then per aggregate: name, op, half_life_ms (0 = none),
#       value_slot (0 = none); then n_values; then the events, in batch order, packed as
#       little-endian doubles: key_index, partition, offset, time_ms, value_1 .. value_n.
# Returns per event, per aggregate, the value before the event, packed as little-endian doubles
# (NaN = undefined). Packing both ways spares a string per number on each side: at 1024 events
# that was most of the Python time of a round trip. Doubles hold offsets and ms times exactly.
AGGREGATE_LUA = """
local ttl, apply, nagg = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local aggs, i = {}, 4
for a = 1, nagg do
  local name = ARGV[i]
  aggs[a] = {op = ARGV[i + 1], hl = tonumber(ARGV[i + 2]), slot = tonumber(ARGV[i + 3]),
             c = name .. ':c', s = name .. ':s', m = name .. ':m'}
  i = i + 4
end
local nval = tonumber(ARGV[i])
local events, width = ARGV[i + 1], 4 + nval
local layout = '<' .. string.rep('d', width)
local undefined = 0 / 0
local state, dirty, out, seen, nout = {}, {}, {}, {}, 0
local pos = 1
while pos <= #events do
  local row = {struct.unpack(layout, events, pos)}
  pos = row[width + 1]
  local k, off, t = row[1], row[3], row[4]
  local seen_key = seen[row[2]]
  if seen_key == nil then seen_key = 'o:' .. string.format('%d', row[2]); seen[row[2]] = seen_key end
  local s = state[k]
  if s == nil then  -- parsed once per batch; every field is a number, written back with %.17g
    s = {}
    local flat = redis.call('HGETALL', KEYS[k])
    for j = 1, #flat, 2 do s[flat[j]] = tonumber(flat[j + 1]) end
    state[k] = s
  end
  local ts = s['ts']
  local last = s[seen_key]
  local fresh = apply and (last == nil or off > last)
  for a = 1, nagg do
    local ag = aggs[a]
    local f = 1
    if ag.hl > 0 and ts ~= nil and t > ts then f = 0.5 ^ ((t - ts) / ag.hl) end
    local c = (s[ag.c] or 0) * f
    local sum = (s[ag.s] or 0) * f
    local m = s[ag.m]
    local r = undefined
    if ag.op == 'count' then r = c
    elseif ag.op == 'sum' then r = sum
    elseif ag.op == 'mean' then if c > 0 then r = sum / c end
    elseif ag.op == 'max' then if m ~= nil then r = m end
    elseif ag.op == 'since_last' then if ts ~= nil then r = (t - ts) / 1000 end
    end
    nout = nout + 1
    out[nout] = r
    if fresh then
      if ag.op == 'count' or ag.op == 'sum' or ag.op == 'mean' then
        s[ag.c] = c + 1
        if ag.slot > 0 then s[ag.s] = sum + row[4 + ag.slot] else s[ag.s] = sum end
      elseif ag.op == 'max' then
        local v = 0
        if ag.slot > 0 then v = row[4 + ag.slot] end
        if m == nil or v > m then s[ag.m] = v end
      end
    end
  end
  if fresh then
    if ts == nil or t > ts then s['ts'] = t end
    s[seen_key] = off
    dirty[k] = true
  end
end
for k, _ in pairs(dirty) do
  local flat = {}
  for field, value in pairs(state[k]) do
    flat[#flat + 1] = field
    flat[#flat + 1] = string.format('%.17g', value)
  end
  redis.call('HSET', KEYS[k], unpack(flat))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end
end
-- packed 64 at a time: one struct.pack per value was a third of the script's run time
local packed = {}
for j = 1, nout, 64 do
  local last = math.min(j + 63, nout)
  packed[#packed + 1] = struct.pack('<' .. string.rep('d', last - j + 1), unpack(out, j, last))
end
return table.concat(packed)
"""


SCRIPT_MAX_EVENTS = 1024  # about 25 ms of script on the bench machine


class KeyLayout:
    """Every Redis key the worker reads or writes, in one place. Aggregate keys put the entity id
    in a hash tag, so one entity's state lives in one Redis Cluster slot."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def aggregate(self, entity_field: str, entity_id: str) -> str:
        return f"{self.prefix}:agg:{entity_field}:{{{entity_id}}}"

    @staticmethod
    def stored(template: str, entity_id: str) -> str:
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
class _AggregateGroup:
    """The aggregates over one entity field: one Lua call (per slot, on a cluster)."""

    entity: str
    features: tuple[Entity, ...]
    values: tuple[str, ...]  # the input fields aggregated, in value-slot order


@dataclass(frozen=True)
class _StoredGroup:
    """The stored features under one key template: one HMGET per distinct entity."""

    entity: str
    template: str
    features: tuple[Entity, ...]


@dataclass(frozen=True)
class Enrichment:
    columns: Columns  # one float32 column per entity feature
    degraded: bool


class FeatureStore:
    def __init__(
        self,
        settings: FeatureStoreSettings,
        spec: FeatureSpec,
        metrics: Metrics,
        time_field: str,
        clock: Callable[[], float] = time.monotonic,
        offline: bool = False,
    ) -> None:
        """`offline`: aggregates come from the in-process twin and Redis is only read for stored
        values, so a backfill or replay reproduces what the worker computed and writes nothing."""
        self.settings = settings
        self.time_field = time_field
        self.replayer = AggregateReplayer(spec.entity_features(), time_field) if offline else None
        self.features = spec.entity_features()
        self.metrics = metrics
        self.keys = KeyLayout(settings.key_prefix)
        self.breaker = CircuitBreaker(settings.breaker_open_s, clock)
        self.retrying = bounded("redis", settings.retries, settings.max_stall_ms / 1000, metrics)
        self.aggregates: list[_AggregateGroup] = []
        self.stored: list[_StoredGroup] = []
        for entity in dict.fromkeys(f.entity for f in self.features if f.aggregate):
            group = tuple(f for f in self.features if f.aggregate and f.entity == entity)
            values = tuple(dict.fromkeys(f.of for f in group if f.of))
            self.aggregates.append(_AggregateGroup(entity, group, values))
        for entity, template in dict.fromkeys((f.entity, f.key) for f in self.features if f.key):
            group = tuple(f for f in self.features if f.key == template and f.entity == entity)
            self.stored.append(_StoredGroup(entity, str(template), group))
        self._client: redis.Redis | RedisCluster | None = None
        self._script: Script | None = None

    def needed_fields(self) -> set[str]:
        return {f.entity for f in self.features} | {f.of for f in self.features if f.of} | {self.time_field}

    def check_schema(self, field_types: dict[str, Any]) -> None:
        missing = sorted(self.needed_fields() - set(field_types))
        if missing:
            raise Fatal(f"entity features need input fields {missing}, which the input schema lacks")

    @property
    def client(self) -> redis.Redis | RedisCluster:
        if self._client is None:
            s = self.settings
            options: dict[str, Any] = {
                "username": s.username,
                "password": s.password.get_secret_value() if s.password else None,
                "socket_timeout": s.timeout_ms / 1000,
                "socket_connect_timeout": s.timeout_ms / 1000,
            }
            if s.tls is not None:
                options |= {
                    "ssl_ca_certs": str(s.tls.ca_file) if s.tls.ca_file else None,
                    "ssl_certfile": str(s.tls.cert_file) if s.tls.cert_file else None,
                    "ssl_keyfile": str(s.tls.key_file) if s.tls.key_file else None,
                }
            factory = RedisCluster.from_url if s.cluster else redis.Redis.from_url
            self._client = factory(s.url, **options)
            self._script = self._client.register_script(AGGREGATE_LUA)
        return self._client

    def start(self) -> None:
        """Check Redis at start-up; unreachable is not fatal (the breaker serves defaults)."""
        if not self.features:
            return
        if not HIREDIS_AVAILABLE:
            log.warning("hiredis is not installed: redis replies parsed in Python cost ~3x (pip install hiredis)")
        try:
            self.client.ping()
        except redis.RedisError as exc:
            log.warning("redis unreachable at start (%s); serving defaults until it answers", exc)
            self.breaker.failed()

    def enrich(self, events: EventBatch, update: bool = True) -> Enrichment:
        """The entity feature columns of a batch: the values before each event, in batch order."""
        if not self.features or not len(events):
            return Enrichment({}, False)
        columns = self._defaults(self.features, len(events))
        if self.replayer is not None:
            columns |= self.replayer.replay(events.columns)
        if not self.stored and (self.replayer is not None or not self.aggregates):
            return Enrichment(columns, False)
        if self.breaker.allows_call():
            try:
                columns |= self.retrying(self._round_trip, events, update)
                self.breaker.succeeded()
                self.metrics.feature_breaker_open.set(0)
                return Enrichment(columns, False)
            except Retriable as exc:
                log.warning("redis failed after retries: %s", exc)
                self.breaker.failed()
                self.metrics.feature_breaker_open.set(1)
        self.metrics.features_degraded.inc(len(events))
        if update and self.aggregates and self.replayer is None:
            self.metrics.feature_updates_skipped.inc(len(events))
        return Enrichment(columns, True)

    @staticmethod
    def _defaults(features: Iterable[Entity], n: int) -> Columns:
        return {f.name: np.full(n, f.default, np.float32) for f in features}

    def _round_trip(self, events: EventBatch, update: bool) -> Columns:
        """Everything Redis serves for this batch, in one pipeline: one round trip."""
        pipe = self.client.pipeline(transaction=False)
        served = [f for f in self.features if f.key or self.replayer is None]
        columns = self._defaults(served, len(events))
        readers: list[tuple[int, Callable[[list[Any]], None]]] = []
        if self.replayer is None:
            for group in self.aggregates:
                readers.extend(self._queue_aggregates(pipe, group, events, update, columns))
        for stored in self.stored:
            readers.append(self._queue_stored(pipe, stored, events, columns))
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:  # down, timed out, loading, read-only replica, …
            raise Retriable(f"redis: {exc}") from exc
        start = 0
        for count, read in readers:
            read(replies[start : start + count])
            start += count
        return columns

    def _queue_aggregates(
        self, pipe: Any, group: _AggregateGroup, events: EventBatch, update: bool, columns: Columns
    ) -> list[tuple[int, Callable[[list[Any]], None]]]:
        """One script call, or one per hash slot on a cluster (a script's keys share a slot)."""
        assert self._script is not None
        identified = np.flatnonzero(has_id(events.columns[group.entity]))  # the rest keep defaults, update nothing
        if not len(identified):
            return []
        events = events.take(identified)
        ids = events.columns[group.entity].astype(str)
        unique, inverse = np.unique(ids, return_inverse=True)
        keys = [self.keys.aggregate(group.entity, entity_id) for entity_id in unique.tolist()]
        header: list[Any] = [int(self.settings.ttl_s * 1000), 1 if update else 0, len(group.features)]
        for feature in group.features:
            slot = group.values.index(feature.of) + 1 if feature.of else 0
            header += [feature.name, feature.aggregate, (feature.half_life_s or 0) * 1000, slot]
        header.append(len(group.values))
        table = np.empty((len(events), 4 + len(group.values)), dtype="<f8")  # the script's event layout
        table[:, 1], table[:, 2], table[:, 3] = events.partitions, events.offsets, events.columns[self.time_field]
        for slot, value in enumerate(group.values, start=4):
            table[:, slot] = events.columns[value]
        if self.settings.cluster:
            slots = np.array([key_slot(k.encode()) for k in keys])[inverse]
            calls = [np.flatnonzero(slots == slot) for slot in np.unique(slots)]
        else:
            calls = [np.arange(len(events))]
        # Redis runs a script to the end before anything else, and the reply must come within
        # timeout_ms: a script per SCRIPT_MAX_EVENTS events, pipelined, bounds both. Later
        # scripts see what earlier ones wrote, so an entity's events still apply in order.
        calls = [part for rows in calls for part in np.array_split(rows, max(1, -(-len(rows) // SCRIPT_MAX_EVENTS)))]
        readers = []
        for rows in calls:
            call_keys, local = np.unique(inverse[rows], return_inverse=True)
            packed = table[rows]
            packed[:, 0] = local + 1  # Lua tables count from 1
            self._script(keys=[keys[k] for k in call_keys.tolist()], args=[*header, packed.tobytes()], client=pipe)
            readers.append((1, self._aggregate_reader(group, identified[rows], columns)))
        return readers

    def _aggregate_reader(
        self, group: _AggregateGroup, rows: np.ndarray, columns: Columns
    ) -> Callable[[list[Any]], None]:
        def read(replies: list[Any]) -> None:
            table = np.frombuffer(replies[0], dtype="<f8").reshape(len(rows), len(group.features))
            for j, feature in enumerate(group.features):
                self._fill(columns[feature.name], rows, table[:, j], feature.default)

        return read

    def _queue_stored(
        self, pipe: Any, group: _StoredGroup, events: EventBatch, columns: Columns
    ) -> tuple[int, Callable[[list[Any]], None]]:
        ids = events.columns[group.entity]
        identified = np.flatnonzero(has_id(ids))  # the rest keep defaults
        unique, inverse = np.unique(ids[identified].astype(str), return_inverse=True)
        fields = [f.field or f.name for f in group.features]
        for entity_id in unique.tolist():
            pipe.hmget(self.keys.stored(group.template, entity_id), fields)

        def read(replies: list[Any]) -> None:
            table = np.array(replies, dtype=object).reshape(len(unique), len(fields))[inverse]
            for j, feature in enumerate(group.features):
                self._fill(columns[feature.name], identified, table[:, j], feature.default)

        return len(unique), read

    def _fill(self, column: np.ndarray, rows: np.ndarray, replies: np.ndarray, default: float) -> None:
        """Write replies into `column`: doubles (NaN absent) or HMGET bytes (nil absent); absent
        values keep the default."""
        numeric = replies.dtype == np.float64
        present = ~np.isnan(replies) if numeric else (replies != b"") & (replies != None)  # noqa: E711
        self.metrics.cache_hits.inc(int(present.sum()))
        self.metrics.cache_misses.inc(int((~present).sum()))
        if present.any():
            column[rows[present]] = replies[present].astype(np.float64)  # float() parses bytes
        column[rows[~present]] = default


class AggregateReplayer:
    """The worker's aggregates computed in Python, row by row: the offline twin of AGGREGATE_LUA
    (same arithmetic, same order, same doubles), so training data and offline scoring see the
    values the worker would have read. State persists across calls; rows must come in event order."""

    def __init__(self, features: tuple[Entity, ...], time_field: str) -> None:
        self.aggregates = [f for f in features if f.aggregate]
        self.time_field = time_field
        self.states: dict[tuple[str, Any], dict[str, float]] = {}

    def replay(self, columns: Columns) -> Columns:
        n = len(columns[self.time_field])
        out = {f.name: np.full(n, f.default, np.float32) for f in self.aggregates}
        times = columns[self.time_field].tolist()
        ids = {f.entity: columns[f.entity].tolist() for f in self.aggregates}
        identified = {f.entity: has_id(columns[f.entity]).tolist() for f in self.aggregates}
        values = {f.of: columns[f.of].astype(np.float64).tolist() for f in self.aggregates if f.of}
        for i, t in enumerate(times):
            touched: set[tuple[str, Any]] = set()
            for f in self.aggregates:
                if not identified[f.entity][i]:
                    continue  # no entity: the default, and no state to update
                key = (f.entity, ids[f.entity][i])
                state = self.states.setdefault(key, {})
                before = self._step(f, state, t, values[f.of][i] if f.of else 0.0)
                if before is not None:
                    out[f.name][i] = before
                touched.add(key)
            for key in touched:
                ts = self.states[key].get("ts")
                self.states[key]["ts"] = t if ts is None or t > ts else ts
        return out

    @staticmethod
    def _step(f: Entity, state: dict[str, float], t: float, v: float) -> float | None:
        """The value before this event; then the event is applied to `state`."""
        ts = state.get("ts")
        decay = 1.0
        if f.half_life_s and ts is not None and t > ts:
            decay = 0.5 ** ((t - ts) / (f.half_life_s * 1000))
        count, total = state.get(f"{f.name}:c", 0.0) * decay, state.get(f"{f.name}:s", 0.0) * decay
        maximum = state.get(f"{f.name}:m")
        before = {
            "count": count,
            "sum": total,
            "mean": total / count if count > 0 else None,
            "max": maximum,
            "since_last": (t - ts) / 1000 if ts is not None else None,
        }[str(f.aggregate)]
        if f.aggregate in ("count", "sum", "mean"):
            state[f"{f.name}:c"], state[f"{f.name}:s"] = count + 1, total + v
        elif f.aggregate == "max" and (maximum is None or v > maximum):
            state[f"{f.name}:m"] = v
        return before


def replay_aggregates(features: tuple[Entity, ...], columns: Columns, time_field: str) -> Columns:
    """Aggregates over a whole training set in one go (see `AggregateReplayer`)."""
    return AggregateReplayer(features, time_field).replay(columns)
