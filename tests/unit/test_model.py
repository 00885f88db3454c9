from pathlib import Path

import pytest

from streamer.errors import Fatal
from streamer.model import load_model, resolve_version


def test_newest_version_unless_pinned(tmp_path: Path) -> None:
    for v in ("1", "3", "10", "notes"):
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


def test_empty_version_folder_is_not_a_saved_model(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(Fatal, match="cannot load a SavedModel"):
        load_model(tmp_path, None, "serving_default", "score", {})


def test_signature_needs_fields_the_schema_lacks(demo_model: Path) -> None:
    with pytest.raises(Fatal, match="which the input schema lacks"):
        load_model(demo_model, None, "serving_default", "score", {"amount": "double"})


def test_unknown_output_is_fatal(demo_model: Path) -> None:
    from streamer.codec import AvroCodec
    from tests.conftest import SCHEMAS

    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    with pytest.raises(Fatal, match="no output 'prob'"):
        load_model(demo_model, None, "serving_default", "prob", fields)
