"""Which versions may serve: a version that would break the running worker is refused at load,
with the fix named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streamer.admission import Admission
from streamer.codec import AvroCodec
from streamer.errors import Fatal
from streamer.model import MANIFEST, _digests
from streamer.outputs import Outputs
from streamer.settings import Settings
from tests.conftest import SCHEMAS


def admission(models: Path) -> tuple[Admission, Settings]:
    settings = Settings.model_validate(
        {
            "topics": {"input": "in", "scored": "out", "dlq": "dlq"},
            "schemas": {
                name: str(SCHEMAS / f"{file}.avsc")
                for name, file in (("input", "payment"), ("scored", "scored_payment"), ("dlq", "dlq_record"))
            },
            "model": {"path": str(models)},
            "event": {"entity_field": "card_id"},
        }
    )
    inputs = AvroCodec(settings.schemas.input)
    return Admission(inputs, Outputs(settings, inputs), None), settings


def version(
    demo_model: Path, models: Path, number: int, edit: str = "", baseline: dict[str, object] | None = None
) -> None:
    """A copy of the demo package as `number`, its spec edited, its baseline replaced, the manifest resealed."""
    folder = models / str(number)
    shutil.copytree(demo_model, folder)
    if edit:
        old, new = edit.split(" -> ")
        spec = (folder / "feature_spec.yaml").read_text()
        assert old in spec
        (folder / "feature_spec.yaml").write_text(spec.replace(old, new, 1))
    if baseline is not None:
        (folder / "baseline.json").write_text(json.dumps(baseline))
    (folder / MANIFEST).write_text(json.dumps(_digests(folder)))


def test_a_later_version_must_keep_the_entity_features_of_the_first(demo_model: Path, tmp_path: Path) -> None:
    version(demo_model / "1", tmp_path, 1)
    version(demo_model / "1", tmp_path, 2, edit="half_life_s: 3600.0 -> half_life_s: 7200.0")
    gate, settings = admission(tmp_path)
    assert gate.load(settings.model, 1).version == 1
    with pytest.raises(Fatal, match="v2: its entity features differ from the serving ones; restart to serve it"):
        gate.load(settings.model, 2)


def test_a_baseline_of_columns_no_batch_carries_is_refused(demo_model: Path, tmp_path: Path) -> None:
    tree = json.loads((demo_model / "1" / "baseline.json").read_text())
    tree["features"]["loyalty_tier"] = tree["features"]["currency"]
    version(demo_model / "1", tmp_path, 1, baseline=tree)
    gate, settings = admission(tmp_path)
    with pytest.raises(Fatal, match=r"baseline.json has columns \['loyalty_tier'\] .* fix schemas.input or re-export"):
        gate.load(settings.model, 1)


def test_a_package_without_a_baseline_serves_with_drift_off(demo_model: Path, tmp_path: Path) -> None:
    version(demo_model / "1", tmp_path, 1, baseline={})
    gate, settings = admission(tmp_path)
    model = gate.load(settings.model, 1)
    assert gate.drift_baseline(model) is None
