"""`streamer quality run` refuses, in one line and before touching Kafka or Redis, what cannot work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli import main
from tests.conftest import SCHEMAS

CONFIG = f"""
topics: {{input: in, scored: out, dlq: dead, labels: labels, quality: quality}}
schemas: {{input: {SCHEMAS}/payment.avsc, scored: {SCHEMAS}/scored_payment.avsc, dlq: {SCHEMAS}/dlq_record.avsc,
  labels: LABELS, quality: {SCHEMAS}/quality_window.avsc}}
model: {{path: models/x}}
event: {{entity_field: card_id}}
"""


def config(tmp_path: Path, labels: Path, quality: bool = True) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("LABELS", str(labels)) + ("quality: {window_s: 60}\n" if quality else ""))
    return path


def test_without_a_quality_section_it_says_what_to_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quality", "run", "--config", str(config(tmp_path, SCHEMAS / "label.avsc", quality=False))]) == 2
    assert "add `quality:` with topics.labels and topics.quality" in capsys.readouterr().err


def test_a_labels_schema_without_the_fields_it_joins_on_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declared = json.loads((SCHEMAS / "label.avsc").read_text())
    declared["fields"] = [f for f in declared["fields"] if f["name"] != "label"]
    schema = tmp_path / "label.avsc"
    schema.write_text(json.dumps(declared))
    assert main(["quality", "run", "--config", str(config(tmp_path, schema))]) == 2
    assert "schemas.labels" in capsys.readouterr().err


def test_the_label_consumer_needs_no_tensorflow() -> None:
    """It meets only Kafka and Redis: a TensorFlow import would cost seconds at every start."""
    code = "import sys, streamer.quality.join; print([m for m in ('tensorflow', 'keras') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
