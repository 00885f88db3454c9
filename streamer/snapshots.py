"""Where the entity state's snapshots live in Redis: the key layout, one read and one write.

Layout. A snapshot (an entity's two versions, see `streamer.entity_state`) is a field of a
hash: one hash per (state layout, input partition, bucket of entity ids, expiry generation),
the field being the entity id. Why hashes and not a key per entity: each checkpoint rewrites
every entity its interval touched, about one per event when entities are many, and Redis spent
4 to 10 µs per `SET … PX` (more from a Lua loop) against about 1 µs per field of one `HSET` —
the state stage's server-side cost per event. The partition and bucket are the key's hash tag,
so each hash, in every generation, lives in one Redis Cluster slot.

Expiry. Redis 7.0 has no per-field expiry, so time is cut into generations of `ttl_s`: a
snapshot is written to the hash of the current generation, and that hash expires at the end of
the next one. An entity not written for between `ttl_s` and twice `ttl_s` goes with its hash;
`ttl_s: 0` keeps one generation that never expires. An entity may have copies in several
generations: reads look at the three around now (members' clocks may disagree at an edge) and
take the newest generation holding it; writes go to the later of now's generation and the one
the entity came from. So the copy read is always the last one written, and an older copy that
outlives it (a crash can leave an uncommitted version there) is never preferred.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.aggregates import AggregateGroup

BUCKETS = 16  # hashes per partition and generation; with 64, fewer fields per call cost Redis +80% per event
READ_CHUNK = 1000  # fields per HMGET: Lua's unpack is limited to a few thousand values
Address = tuple[str, str]  # (hash key without its generation, field)

# KEYS: per group of fields, the hashes of generations g-1, g, g+1; ARGV: per group, its field
# count and fields. Returns the values in ARGV order (nil where no generation holds the field),
# and per field the generation it came from: '0', '1', '2' (g-1, g, g+1) or '-'.
READ_LUA = """
local values, where, a = {}, {}, 1
for k = 1, #KEYS, 3 do
  local n = tonumber(ARGV[a])
  local fields = {unpack(ARGV, a + 1, a + n)}
  a = a + n + 1
  local found, generation = {}, {}
  for g = 2, 0, -1 do
    local got = redis.call('HMGET', KEYS[k + g], unpack(fields))
    for j = 1, n do
      if found[j] == nil and got[j] then found[j], generation[j] = got[j], g end
    end
  end
  for j = 1, n do
    values[#values + 1] = found[j] or false
    where[#where + 1] = generation[j] and tostring(generation[j]) or '-'
  end
end
return {values, table.concat(where)}
"""
READ_SHA = hashlib.sha1(READ_LUA.encode()).hexdigest()  # what EVALSHA names it by


class SnapshotLayout:
    def __init__(
        self, prefix: str, group: AggregateGroup, ttl_s: float, cluster: bool, wall: Callable[[], float] = time.time
    ) -> None:
        self.base = f"{prefix}:agg:{group.digest}:{group.entity}"
        self.ttl_s = ttl_s
        self.cluster = cluster
        self.wall = wall

    def address(self, entity_id: str, partition: int) -> Address:
        bucket = zlib.crc32(entity_id.encode()) % BUCKETS
        return f"{self.base}:{{{partition}.{bucket}}}", entity_id

    def generation(self) -> int:
        return int(self.wall() // self.ttl_s) if self.ttl_s > 0 else 0

    def queue_read(self, pipe: Any, addresses: list[Address]) -> Callable[[list[Any]], Any]:
        """Queue the read of `addresses` (one call of READ_LUA by its digest, or one per hash in
        a cluster); the returned function turns the calls' replies into (value or None,
        generation or -1) per address, in order. By digest, not through redis-py's Script:
        in a pipeline that asks SCRIPT EXISTS first, one more round trip per batch. A server
        that lost the script answers NOSCRIPT, and the caller loads it and retries."""
        now = self.generation()
        order = sorted(range(len(addresses)), key=lambda i: addresses[i][0])
        calls: list[tuple[list[str], list[Any]]] = []
        start = 0
        while start < len(order):
            stem = addresses[order[start]][0]
            stop = start
            while stop < len(order) and stop - start < READ_CHUNK and addresses[order[stop]][0] == stem:
                stop += 1
            if not calls or self.cluster:
                calls.append(([], []))
            keys, args = calls[-1]
            keys += [f"{stem}:{now + g}" for g in (-1, 0, 1)]
            args += [stop - start, *(addresses[i][1] for i in order[start:stop])]
            start = stop
        for keys, args in calls:
            pipe.evalsha(READ_SHA, len(keys), *keys, *args)

        def read(replies: list[Any]) -> tuple[list[bytes | None], np.ndarray]:
            values: list[bytes | None] = [None] * len(addresses)
            generations = np.full(len(addresses), -1, np.int64)
            ordered_values = [v for reply in replies for v in reply[0]]
            where = b"".join(reply[1] for reply in replies)
            for position, i in enumerate(order):
                values[i] = ordered_values[position]
                if where[position : position + 1] != b"-":
                    generations[i] = now - 1 + where[position] - ord("0")
            return values, generations

        return read

    def queue_write(
        self, pipe: Any, addresses: list[Address], generations: np.ndarray, values: np.ndarray
    ) -> np.ndarray:
        """Queue one HSET (and its expiry) per hash; returns the generation each went to."""
        targets = np.maximum(generations, self.generation())
        hashes: dict[str, dict[str, bytes]] = {}
        for (stem, field), generation, value in zip(addresses, targets.tolist(), values, strict=True):
            hashes.setdefault(f"{stem}:{generation}", {})[field] = value.tobytes()
        for key, fields in hashes.items():
            pipe.hset(key, mapping=fields)
            if self.ttl_s > 0:
                ends = int(key.rsplit(":", 1)[1]) + 2  # the end of the generation after this one
                pipe.pexpireat(key, int(ends * self.ttl_s * 1000))
        return targets
