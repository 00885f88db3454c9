import json
import shutil
from pathlib import Path

import pytest

from streamer.codec import AvroCodec
from streamer.errors import Fatal
from streamer.model import MANIFEST, _digests, load_model, resolve_version, verify_package
from streamer.settings import ModelSettings
from tests.conftest import SCHEMAS

FIELDS = AvroCodec(SCHEMAS / "payment.avsc").field_types


def test_newest_version_unless_pinned(tmp_path: Path) -> None:
    for v in ("1", "3", "10", "notes", ".2-staging"):
        (tmp_path / v).mkdir()
    assert resolve_version(tmp_path, None) == (10, tmp_path / "10")
    assert resolve_version(tmp_path, 3) == (3, tmp_path / "3")


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match="export-demo"):
        resolve_version(tmp_path / "absent", None)


def test_pinned_version_absent(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(Fatal, match=r"model.version 2: not in .* \(found \[1\]\)"):
        resolve_version(tmp_path, 2)


@pytest.fixture
def package(demo_model: Path, tmp_path: Path) -> Path:
    """A private copy of the session's package, free to damage."""
    copy = tmp_path / "fraud"
    shutil.copytree(demo_model, copy)
    return copy / "1"


def test_package_holds_spec_baseline_assets_and_manifest(package: Path) -> None:
    verify_package(package)
    manifest = json.loads((package / MANIFEST).read_text())
    assert {"saved_model.pb", "feature_spec.yaml", "baseline.json", "assets/country.vocab"} <= set(manifest)
    assert any(name.startswith("variables/") for name in manifest)
    baseline = json.loads((package / "baseline.json").read_text())
    assert sum(baseline["score"]["counts"]) == 400  # the holdout: 10% of 4000 events
    assert baseline["features"]["amount"]["kind"] == "numeric"


def test_flipped_byte_in_variables_is_refused(package: Path) -> None:
    data = next((package / "variables").glob("variables.data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(Fatal, match=r"sha256 mismatch in variables/variables.data-.*altered"):
        verify_package(package)


def test_missing_file_is_refused(package: Path) -> None:
    (package / "assets" / "mcc.vocab").unlink()
    with pytest.raises(Fatal, match=r"missing file assets/mcc.vocab"):
        verify_package(package)


def test_added_file_is_refused(package: Path) -> None:
    (package / "variables" / "extra.bin").write_bytes(b"x")
    with pytest.raises(Fatal, match=r"variables/extra.bin is not in MANIFEST.json"):
        verify_package(package)


def test_package_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(Fatal, match=r"no MANIFEST\.json"):
        load_model(ModelSettings(path=tmp_path), FIELDS)


def test_broken_graph_with_matching_manifest_is_refused(package: Path) -> None:
    (package / "saved_model.pb").write_bytes(b"not a graph")
    (package / MANIFEST).write_text(json.dumps(_digests(package)))
    with pytest.raises(Fatal, match="cannot load a SavedModel"):
        load_model(ModelSettings(path=package.parent), FIELDS)


def test_signature_needs_fields_the_schema_lacks(demo_model: Path) -> None:
    with pytest.raises(Fatal, match="which the input schema lacks"):
        load_model(ModelSettings(path=demo_model), {"amount": "double"})


def test_unknown_output_is_fatal(demo_model: Path) -> None:
    with pytest.raises(Fatal, match="no output 'prob'"):
        load_model(ModelSettings(path=demo_model, score_output="prob"), FIELDS)
