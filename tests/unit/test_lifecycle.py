"""Version policy, hot swap, refusal of a tampered version, rollback by config, canary routing."""

import os
import shutil
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from streamer.codec import AvroCodec
from streamer.errors import Fatal
from streamer.lifecycle import BUCKETS, ModelLifecycle, Serving, entity_buckets, routed
from streamer.model import MANIFEST, LoadedModel, load_package
from streamer.settings import ModelSettings
from tests.conftest import SCHEMAS, drop_version, tamper

FIELDS = AvroCodec(SCHEMAS / "payment.avsc").field_types
SIZES = (64,)


def load(settings: ModelSettings, version: int) -> LoadedModel:
    return load_package(settings, version, FIELDS)


@pytest.fixture
def models(demo_model: Path, tmp_path: Path) -> Path:
    base = tmp_path / "fraud"
    shutil.copytree(demo_model, base)
    return base


def write_config(path: Path, model: dict[str, object]) -> Path:
    tree = {
        "topics": {"input": "in", "scored": "out", "dlq": "dlq"},
        "schemas": {k: str(SCHEMAS / f) for k, f in (("input", "payment.avsc"), ("scored", "scored_payment.avsc"))}
        | {"dlq": str(SCHEMAS / "dlq_record.avsc")},
        "model": model,
        "event": {"entity_field": "card_id"},
    }
    path.write_text(yaml.safe_dump(tree))
    return path


def reloaded(lifecycle: ModelLifecycle) -> Serving:
    """SIGHUP, then what the watcher thread prepares from the config file. (Calling `check()` here
    too would race the thread woken for the same reload.)"""
    lifecycle.request_reload()
    deadline = time.monotonic() + 60
    while (swapped := lifecycle.swap_if_ready()) is None:
        assert time.monotonic() < deadline, "the watcher never applied the reloaded config"
        time.sleep(0.02)
    lifecycle.close()
    return swapped


def test_buckets_are_stable_crc32_and_shares_are_nested() -> None:
    ids = np.array(["card-0000001", "card-0000002", "card-0000001"], dtype=object)
    buckets = entity_buckets(ids)
    assert buckets.tolist()[0] == buckets.tolist()[2] == zlib.crc32(b"card-0000001") % BUCKETS
    many = entity_buckets(np.array([f"card-{i:07d}" for i in range(100_000)], dtype=object))
    assert np.all(routed(many, 0.05) <= routed(many, 0.10))  # raising a share only adds entities


def test_canary_share_is_within_binomial_bounds() -> None:
    rng = np.random.default_rng(9)
    ids = np.array([f"e-{x}" for x in rng.integers(0, 2**62, 100_000)], dtype=object)
    share = routed(entity_buckets(ids), 0.10).mean()
    assert abs(share - 0.10) < 4 * np.sqrt(0.1 * 0.9 / len(ids))  # 4 standard deviations


def test_new_version_is_loaded_in_the_background_and_swapped_once(models: Path) -> None:
    lifecycle = ModelLifecycle(ModelSettings(path=models, watch_interval_s=0), load, SIZES)
    assert lifecycle.start().primary.version == 1
    lifecycle.check()
    assert lifecycle.swap_if_ready() is None  # nothing new
    drop_version(models, 1, 2)
    (models / ".3-staging").mkdir()  # an export in progress is not a version
    lifecycle.check()
    swapped = lifecycle.swap_if_ready()
    assert swapped is not None and swapped.primary.version == 2 and swapped.candidate is None
    assert lifecycle.swap_if_ready() is None
    lifecycle.check()
    assert lifecycle.swap_if_ready() is None


def test_tampered_version_is_refused_and_the_old_one_keeps_serving(models: Path) -> None:
    refused: list[tuple[int, str]] = []
    lifecycle = ModelLifecycle(
        ModelSettings(path=models, watch_interval_s=0), load, SIZES, on_refused=lambda v, r: refused.append((v, r))
    )
    lifecycle.start()
    tamper(drop_version(models, 1, 3))
    lifecycle.check()
    assert lifecycle.swap_if_ready() is None
    assert lifecycle.serving is not None and lifecycle.serving.primary.version == 1
    assert [v for v, _ in refused] == [3] and "sha256 mismatch" in refused[0][1]
    lifecycle.check()  # remembered: not retried, not logged again
    assert len(refused) == 1


def test_pinning_in_the_config_file_rolls_back_without_a_restart(models: Path, tmp_path: Path) -> None:
    drop_version(models, 1, 2)
    config = write_config(tmp_path / "config.yaml", {"path": str(models), "watch_interval_s": 0})
    lifecycle = ModelLifecycle(ModelSettings(path=models, watch_interval_s=0), load, SIZES, config)
    assert lifecycle.start().primary.version == 2
    write_config(config, {"path": str(models), "policy": "pinned", "version": 1})
    assert reloaded(lifecycle).primary.version == 1


def test_a_rollout_makes_the_newer_version_a_candidate_and_zero_shares_promote_it(models: Path, tmp_path: Path) -> None:
    model = {"path": str(models), "watch_interval_s": 0, "canary_share": 0.1, "shadow_share": 0.2}
    config = write_config(tmp_path / "config.yaml", model)
    lifecycle = ModelLifecycle(ModelSettings.model_validate(model), load, SIZES, config)
    assert lifecycle.start().versions == (1, None, 0.0, 0.0)  # no newer version: no candidate yet
    drop_version(models, 1, 2)
    lifecycle.check()
    swapped = lifecycle.swap_if_ready()
    assert swapped is not None
    assert swapped.versions == (1, 2, 0.1, 0.2)
    write_config(config, {**model, "canary_share": 0, "shadow_share": 0})
    assert reloaded(lifecycle).versions == (2, None, 0.0, 0.0)


def test_a_rollout_survives_start_up_and_restarts_and_pinning_ends_it(models: Path, tmp_path: Path) -> None:
    drop_version(models, 1, 2)
    model = {"path": str(models), "watch_interval_s": 0, "canary_share": 0.1, "shadow_share": 0.2}
    config = write_config(tmp_path / "config.yaml", model)
    for _ in range(2):  # a worker that starts with both versions present, then its restart
        lifecycle = ModelLifecycle(ModelSettings.model_validate(model), load, SIZES, config)
        assert lifecycle.start().versions == (1, 2, 0.1, 0.2)
    write_config(config, {**model, "policy": "pinned", "version": 1})  # the shares left as they were
    assert reloaded(lifecycle).versions == (1, None, 0.0, 0.0)
    pinned = ModelSettings.model_validate({**model, "policy": "pinned", "version": 1, "candidate": 2})
    assert ModelLifecycle(pinned, load, SIZES).start().versions == (1, 2, 0.1, 0.2)


def test_a_candidate_that_fails_at_start_up_is_refused_and_the_primary_serves_alone(models: Path) -> None:
    tamper(drop_version(models, 1, 2))
    refused: list[int] = []
    settings = ModelSettings(path=models, watch_interval_s=0, canary_share=0.1)
    lifecycle = ModelLifecycle(settings, load, SIZES, on_refused=lambda v, r: refused.append(v))
    assert lifecycle.start().versions == (1, None, 0.0, 0.0)
    assert refused == [2]


def test_the_watcher_thread_warms_every_size_off_the_scoring_thread(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed: list[tuple[int, tuple[int, ...], str]] = []
    warm_up = LoadedModel.warm_up

    def spy(self: LoadedModel, sizes: tuple[int, ...]) -> None:
        warm_up(self, sizes)
        warmed.append((self.version, sizes, threading.current_thread().name))

    monkeypatch.setattr(LoadedModel, "warm_up", spy)
    lifecycle = ModelLifecycle(ModelSettings(path=models, watch_interval_s=0.05), load, (8, 64))
    lifecycle.start()
    try:
        drop_version(models, 1, 2)
        deadline = time.monotonic() + 60
        while (swapped := lifecycle.swap_if_ready()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert swapped is not None and swapped.primary.version == 2
        assert warmed == [(1, (8, 64), "MainThread"), (2, (8, 64), "model-watcher")]
    finally:
        lifecycle.close()
    lifecycle._thread.join(30)
    assert not lifecycle._thread.is_alive()


def test_a_refused_version_is_retried_once_its_manifest_changes(models: Path) -> None:
    lifecycle = ModelLifecycle(ModelSettings(path=models, watch_interval_s=0), load, SIZES)
    lifecycle.start()
    tamper(drop_version(models, 1, 2))
    lifecycle.check()
    assert lifecycle.swap_if_ready() is None
    shutil.copytree(models / "1" / "variables", models / "2" / "variables", dirs_exist_ok=True)  # re-copied
    manifest = models / "2" / MANIFEST
    os.utime(manifest, (manifest.stat().st_atime, manifest.stat().st_mtime + 10))
    lifecycle.check()
    swapped = lifecycle.swap_if_ready()
    assert swapped is not None and swapped.primary.version == 2


def test_start_up_stops_when_the_wanted_version_does_not_load(models: Path) -> None:
    tamper(models / "1")
    with pytest.raises(Fatal, match=r"sha256 mismatch in variables/"):
        ModelLifecycle(ModelSettings(path=models, watch_interval_s=0), load, SIZES).start()
