import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from streamer.codec import AvroCodec
from streamer.errors import Fatal
from streamer.model import (
    MANIFEST,
    _digests,
    available_versions,
    choose_versions,
    initial_version,
    load_model,
    load_package,
    sign_package,
    verify_package,
    verify_signature,
)
from streamer.output_settings import ScalarOutput, VectorOutput
from streamer.settings import ModelSettings
from tests.conftest import SCHEMAS

FIELDS = AvroCodec(SCHEMAS / "payment.avsc").field_types


def pick(found: list[int], refused: tuple[int, ...] = (), **model: Any) -> tuple[int | None, int | None]:
    return choose_versions(ModelSettings(path=Path("m"), **model), found, refused)


def test_version_policies(tmp_path: Path) -> None:
    for v in ("1", "3", "10", "notes", ".2-staging"):
        (tmp_path / v).mkdir()
    found = available_versions(tmp_path)
    assert found == [1, 3, 10]
    assert pick(found) == (10, None)
    assert pick(found, refused=(10,)) == (3, None)
    assert pick(found, version=3) == (3, None)  # a version alone pins
    assert pick(found, policy="list", versions=(1, 3)) == (3, None)
    assert pick(found, policy="pinned", version=2) == (None, None)


def test_a_rollout_holds_the_newest_version_back_as_the_candidate() -> None:
    canary = {"canary_share": 0.1}
    assert pick([1], **canary) == (1, None)  # nothing newer yet
    assert pick([1, 2], **canary) == (1, 2)  # at start-up as after v2 arrived
    assert pick([1, 2, 3], **canary) == (2, 3)  # v2 was promoted; v1 stays on disk for rollbacks
    assert pick([1, 2, 3], refused=(3,), **canary) == (1, 2)  # a refused version counts as absent
    assert pick([1, 2, 3], shadow_share=0.2, primary=1) == (1, 3)
    assert pick([1, 2, 3], candidate=2, **canary) == (1, 2)
    assert pick([1, 2, 3], policy="list", versions=(1, 3), **canary) == (1, 3)
    assert pick([1, 2], primary=1) == (2, None)  # shares at 0: the policy decides, a promotion
    assert pick([1, 2], version=1, **canary) == (1, None)  # pinning is a rollback: no canary traffic
    assert pick([1, 2], version=1, candidate=2, **canary) == (1, 2)  # unless a candidate is named
    assert pick([1], version=1, candidate=2, **canary) == (1, None)


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match="export-demo"):
        initial_version(ModelSettings(path=tmp_path / "absent"))


def test_pinned_version_absent(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(Fatal, match=r"policy pinned wants version 2, found \[1\]"):
        initial_version(ModelSettings(path=tmp_path, version=2))


def test_incomplete_policies_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"policy list needs model\.versions"):
        ModelSettings(path=tmp_path, policy="list")
    with pytest.raises(ValueError, match=r"policy pinned needs model\.version"):
        ModelSettings(path=tmp_path, policy="pinned")
    with pytest.raises(ValueError, match=r"model\.version is the primary; remove model\.primary"):
        ModelSettings(path=tmp_path, version=1, primary=1)
    with pytest.raises(ValueError, match=r"model\.candidate 1 is also the primary"):
        ModelSettings(path=tmp_path, version=1, candidate=1)
    with pytest.raises(ValueError, match=r"policy list: version 2 is not in model\.versions \[1, 3\]"):
        ModelSettings(path=tmp_path, policy="list", versions=(1, 3), candidate=2)


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
        load_model(ModelSettings(path=demo_model), FIELDS, (ScalarOutput(output="prob"),))


def test_an_output_of_the_wrong_shape_is_refused_with_one_line(demo_model: Path) -> None:
    selection = (VectorOutput(kind="vector", output="score", length=5),)
    with pytest.raises(Fatal, match=r"signature serving_default: output 'score' has shape \[None\], .*\[batch, 5\]"):
        load_model(ModelSettings(path=demo_model), FIELDS, selection)


def test_signed_package_verifies_and_a_tampered_one_is_refused(package: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    settings = ModelSettings(path=package.parent, public_key=public)
    with pytest.raises(Fatal, match=r"no model\.sig"):
        load_package(settings, 1, FIELDS)
    sign_package(package, private)
    verify_package(package)  # the signature file is not part of the manifest
    assert load_package(settings, 1, FIELDS).version == 1
    baseline = package / "baseline.json"
    baseline.write_text(baseline.read_text() + " ")
    with pytest.raises(Fatal, match="signature check failed"):
        verify_signature(package, public)
