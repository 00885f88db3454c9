"""Model versions while serving, TF Serving style: watch, verify, load, warm, swap between batches.

A watcher thread looks at `model.path` (and the config file) every `model.watch_interval_s`. A
version the policy wants is verified (manifest, and signature when `model.public_key` is set),
loaded and warmed on every padded batch size *on that thread*, then handed over; the scoring
loop picks it up between two batches with one attribute swap (`swap_if_ready`), so no batch
waits for a load. A version that fails any step is refused and logged once, and the one serving
keeps serving (Triton's behaviour); it is retried only if its MANIFEST.json changes.

Which versions serve is a function of the config and the folder alone (`model.choose_versions`),
never of what a worker served before: every worker of a group, after any restart, and the workers
a scale-out adds, arrive at the same primary and candidate without talking to each other, so an
entity never sees two versions because of a restart or a rebalance. The state that survives a
restart is the config file (and the folders present), which the operator changes to move on:

- both shares 0: the policy alone decides (`latest`: the newest; `pinned`: `model.version`;
  `list`: the newest of `model.versions`). No candidate.
- `model.canary_share` or `model.shadow_share` above 0 (a rollout), policy `latest` or `list`:
  the candidate is the newest allowed version (or `model.candidate`), the primary the version the
  policy would serve without it, the next older allowed one (or `model.primary`). A worker that
  starts with v1 and v2 present serves v1 and canaries v2, exactly as one that saw v2 arrive. Not
  "the oldest kept version": folders stay for rollbacks, and a later rollout would then hand the
  fleet back to a version promoted away long ago. One rollout at a time: a version copied in
  before the last one was promoted or rolled back makes the unpromoted one primary, unless
  `model.primary` is set.
- policy `pinned`: `model.version` is the primary, and canary and shadow traffic stop even if a
  share is left above 0, so pinning is a complete rollback; `model.candidate` asks explicitly for
  a candidate beside the pinned primary.

Entities whose bucket (CRC-32 of the id, the same in every process) falls under the canary share
get the candidate's decision; those under the shadow share are scored by it too, into
`shadow_score` only. Promotion: both shares to 0 (or `model.primary` to the candidate's version);
rollback: `policy: pinned` with the old version. Both take effect on SIGHUP or when the config
file changes, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.errors import Fatal
from streamer.model import MANIFEST, LoadedModel, available_versions, choose_versions, initial_version
from streamer.settings import ModelSettings, load_settings

log = logging.getLogger(__name__)

BUCKETS = 10_000  # entity buckets: shares are routed in steps of 0.01%


def entity_buckets(entity_ids: np.ndarray) -> np.ndarray:
    """A bucket in [0, BUCKETS) per entity id: CRC-32 of its UTF-8, the same in every process and
    on every restart (Python's `hash` of a str is salted per process)."""
    return np.fromiter(
        (zlib.crc32(str(i).encode()) % BUCKETS for i in entity_ids.tolist()), dtype=np.int32, count=len(entity_ids)
    )


def routed(buckets: np.ndarray, share: float) -> np.ndarray:
    """Which entities fall under `share`: the lowest buckets, so raising a share only adds entities."""
    return buckets < round(share * BUCKETS)


@dataclass(frozen=True)
class Serving:
    """What scores the next batch: the primary decides; the candidate takes the canary's
    decisions and the shadow's scores."""

    primary: LoadedModel
    candidate: LoadedModel | None = None
    canary_share: float = 0.0
    shadow_share: float = 0.0

    @property
    def versions(self) -> tuple[int, int | None, float, float]:
        candidate = None if self.candidate is None else self.candidate.version
        return self.primary.version, candidate, self.canary_share, self.shadow_share


Loader = Callable[[ModelSettings, int], LoadedModel]


class ModelLifecycle:
    def __init__(
        self,
        settings: ModelSettings,
        load: Loader,
        sizes: tuple[int, ...],
        config_path: Path | None = None,
        on_change: Callable[[Serving], None] = lambda serving: None,
        on_refused: Callable[[int, str], None] = lambda version, reason: None,
    ) -> None:
        """`load` verifies and loads one version (it raises `Fatal` to refuse it); the model
        section of `config_path` is read again on SIGHUP and when the file changes;
        `on_change` and `on_refused` feed metrics."""
        self.settings = settings
        self.load = load
        self.sizes = sizes
        self.config_path = config_path
        self._config_mtime = _mtime(config_path) if config_path else 0.0
        self.on_change = on_change
        self.on_refused = on_refused
        self.serving: Serving | None = None
        self._pending: Serving | None = None
        self._lock = threading.Lock()
        self._loaded: dict[int, LoadedModel] = {}
        self._refused: dict[int, float] = {}  # version → MANIFEST.json mtime when refused
        self._wake = threading.Event()
        self._reload_requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)

    def start(self) -> Serving:
        """The first serving set, loaded on the caller's thread: a primary that does not load stops
        start-up; a candidate that does not is refused and chosen around, as while serving."""
        primary = self._prepare(initial_version(self.settings), required=True)
        self.serving = self._serving_wanted() or Serving(primary)
        self.on_change(self.serving)
        if self.settings.watch_interval_s > 0 or self.config_path is not None:
            self._thread.start()
        return self.serving

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """SIGHUP: read the config file again and apply its model section (signal-safe: a flag)."""
        self._reload_requested = True
        self._wake.set()

    def swap_if_ready(self) -> Serving | None:
        """Between batches: install what the watcher prepared; the new serving set, or None."""
        if self._pending is None:
            return None
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        self.serving = pending
        self.on_change(pending)
        return pending

    def check(self) -> None:
        """One pass of the watcher: config, folder, policy; load what is missing. Public so
        tests can drive it without the thread."""
        if self.config_path is not None:
            changed = _mtime(self.config_path) != self._config_mtime
            if self._reload_requested or changed:
                self._reload_requested = False
                self._config_mtime = _mtime(self.config_path)
                try:
                    self.settings = load_settings(self.config_path).model
                    log.info("model settings reloaded: policy %s", self.settings.policy, extra={"event": "reload"})
                except Fatal as exc:
                    log.error("config reload refused, keeping the running settings: %s", exc)
        wanted = self._serving_wanted()
        current = self._pending or self.serving
        if wanted is not None and current is not None and wanted.versions != current.versions:
            with self._lock:
                self._pending = wanted

    def _serving_wanted(self) -> Serving | None:
        """The serving set the settings and the folder call for, loading what it needs."""
        while True:
            try:
                found = available_versions(self.settings.path)
            except Fatal as exc:
                log.warning("model folder unreadable, keeping the serving version: %s", exc)
                return None
            self._forgive_changed(found)
            primary, candidate = choose_versions(self.settings, found, self._refused)
            if primary is None:
                return None
            try:
                return self._serving(primary, candidate)
            except _Refused:
                continue  # one more version is refused: choose again without it

    def _serving(self, primary: int, candidate: int | None = None) -> Serving:
        """The set for these versions. A version swapped out stays loaded (an instant rollback)
        until another one has to be loaded: freeing a model's Python objects holds the GIL for
        ~30 ms, which between two batches tripled the swap gap; during a load it blends in."""
        wanted = {v for v in (primary, candidate) if v is not None}
        if not wanted <= set(self._loaded):
            serving = self.serving
            keep = wanted | ({serving.primary.version} if serving else set())
            keep |= {serving.candidate.version} if serving and serving.candidate else set()
            self._loaded = {v: m for v, m in self._loaded.items() if v in keep}
        models = {v: self._prepare(v) for v in (primary, candidate) if v is not None}
        s = self.settings
        return Serving(
            models[primary],
            None if candidate is None else models[candidate],
            s.canary_share if candidate is not None else 0.0,
            s.shadow_share if candidate is not None else 0.0,
        )

    def _prepare(self, version: int, required: bool = False) -> LoadedModel:
        """Loaded and warm, or `_Refused`; a `Fatal` for the `required` first primary."""
        if version in self._loaded:
            return self._loaded[version]
        started = time.monotonic()
        try:
            model = self.load(self.settings, version)
            model.warm_up(self.sizes)
        except Fatal as exc:
            if required:
                raise
            self._refuse(version, str(exc))
            raise _Refused from exc
        except Exception as exc:  # a graph that fails its warm-up call is as unusable as a bad file
            if required:
                raise Fatal(
                    f"model {self.settings.path / str(version)}: warm-up failed ({exc}); fix the model"
                ) from exc
            self._refuse(version, f"warm-up failed: {exc}")
            raise _Refused from exc
        log.info(
            "model %s v%d loaded and warm on sizes %s in %.2f s",
            model.name,
            version,
            self.sizes,
            time.monotonic() - started,
            extra={"event": "model_ready", "model": model.name, "version": version},
        )
        self._loaded[version] = model
        return model

    def _refuse(self, version: int, reason: str) -> None:
        serving = self.serving
        keeping = f"v{serving.primary.version} keeps serving" if serving else "nothing serves yet"
        log.error("refused model version %d: %s; %s", version, reason, keeping, extra={"event": "model_refused"})
        self._refused[version] = _mtime(self.settings.path / str(version) / MANIFEST)
        self.on_refused(version, reason)

    def _forgive_changed(self, found: list[int]) -> None:
        """A refused version whose manifest changed (re-copied, re-exported) gets another chance."""
        for version, mtime in list(self._refused.items()):
            if version not in found or _mtime(self.settings.path / str(version) / MANIFEST) != mtime:
                del self._refused[version]

    def _watch(self) -> None:
        interval = self.settings.watch_interval_s or None
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad pass; the loop keeps serving
                log.exception("model watcher pass failed; retrying at the next interval")


class _Refused(Exception):
    """A version failed to load or warm; it is remembered and another one chosen."""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
