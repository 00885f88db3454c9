"""A checkpoint's entity snapshot (and the scores waiting for labels) on its way to Redis, in
steps.

Why in steps: at a few thousand events a second a checkpoint rewrites thousands of entities,
tens of ms on a loaded machine, and every event arriving meanwhile waited for all of it. An
at-least-once cut writes a chunk per loop step instead, between batches: WRITE_CHUNK entities,
or more where that would take over WRITE_STEPS steps (at high rates steps are long and
snapshots large, and the checkpoint interval must still hold). The entities were taken at the
cut (`EntityState.snapshot`), so events applied meanwhile go into the next snapshot; a failed or
abandoned write hands its entities and scores back to the next one, and the checkpoint then
commits nothing. A whole checkpoint (a revoke, a shutdown, a transaction) writes it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from streamer.entity_state import EntityState, Snapshot
from streamer.errors import Retriable
from streamer.quality.scores import PendingScores, ScoreLog

log = logging.getLogger(__name__)

# About a millisecond of client and server work on this machine, unloaded.
WRITE_CHUNK = 256
WRITE_STEPS = 8  # larger snapshots: in this many steps

# Rows of a snapshot and the scores (or None) in one round trip; the generation each row went to.
WriteChunk = Callable[[Snapshot | None, slice, PendingScores | None], np.ndarray | None]


class SnapshotWrite:
    def __init__(
        self,
        snapshot: Snapshot | None,
        scores: PendingScores | None,
        write: WriteChunk,
        state: EntityState | None,
        score_log: ScoreLog | None,
    ) -> None:
        self.snapshot = snapshot
        self.scores = scores
        self.write = write
        self.state = state
        self.score_log = score_log
        self._size = 0 if snapshot is None else len(snapshot.keys)
        self._generations = np.zeros(self._size, np.int64)
        self._chunk = max(WRITE_CHUNK, -(-self._size // WRITE_STEPS))
        self._done = 0
        self.ended = False

    def step(self) -> bool:
        """Write the next chunk, the scores with the first; True once everything is written.
        Raises `Retriable` if Redis failed or the write was abandoned: nothing of it counts as
        written then."""
        return self._write_through(min(self._done + self._chunk, self._size))

    def finish(self) -> None:
        """Write all that is left, in one round trip."""
        self._write_through(self._size)

    def _write_through(self, stop: int) -> bool:
        if self.ended:
            raise Retriable("the snapshot under way was abandoned: partitions were revoked, lost or rewound")
        rows = slice(self._done, stop)
        scores, self.scores = self.scores, None
        try:
            generations = self.write(self.snapshot, rows, scores)
        except Retriable as exc:
            self.scores = scores
            self.abandon()
            if self.snapshot is not None:
                raise
            log.warning("scores for quality not written, kept for the next checkpoint: %s", exc)
            return True
        if scores is not None and self.score_log is not None:
            self.score_log.written(scores)
        if generations is not None:
            self._generations[rows] = generations
        self._done = stop
        if self._done < self._size:
            return False
        if self.snapshot is not None and self.state is not None:
            self.state.written(self.snapshot, self._generations)
        self.ended = True
        return True

    def abandon(self) -> None:
        """Hand what is not confirmed back: the entities to the next snapshot, the scores to
        the log. Before any `EntityState.forget` since the snapshot was taken (it renumbers)."""
        if self.ended:
            return
        self.ended = True
        if self.snapshot is not None and self.state is not None:
            self.state.unwritten(self.snapshot)
        if self.scores is not None and self.score_log is not None:
            self.score_log.restore(self.scores)
        self.scores = None
