"""Each key of the event contract, named wrong or mistyped, stops `run` and `score` at start with
exit code 2 and one line naming the key."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.cli import main
from streamer.codec import AvroCodec
from streamer.contract import check_entity_features
from streamer.errors import Fatal
from streamer.feature_spec import FeatureSpec
from streamer.model import load_model
from streamer.outputs import check_scored_schema, derived_schema
from streamer.settings import load_settings
from tests.conftest import SCHEMAS, nullable_payments


def config(
    tmp_path: Path, event: dict[str, Any], input_schema: Path = SCHEMAS / "payment.avsc", model: Path | None = None
) -> Path:
    """A config whose model is never loaded, unless `model` names one: the event contract is
    checked first, the scored schema against the model's signature."""
    tree = {
        "topics": {"input": "in", "scored": "out", "dlq": "dlq"},
        "schemas": {
            "input": str(input_schema),
            "scored": str(SCHEMAS / "scored_payment.avsc"),
            "dlq": str(SCHEMAS / "dlq_record.avsc"),
        },
        "model": {"path": str(model or tmp_path / "never-loaded")},
        "event": {"entity_field": "card_id", **event},
        "metrics": {"enabled": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def fatal_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """`one_line` once a model is loaded: the start's JSON log lines come before the one line."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith('{"time"')]
    assert len(lines) == 1, lines
    return lines[0]


def micros_schema(tmp_path: Path) -> Path:
    declared = json.loads((SCHEMAS / "payment.avsc").read_text())
    for field in declared["fields"]:
        if field["name"] == "event_time":
            field["type"]["logicalType"] = "timestamp-micros"
    path = tmp_path / "micros.avsc"
    path.write_text(json.dumps(declared))
    return path


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"id_field": "id"}, "event.id_field: "),
        ({"id_field": "amount"}, "event.id_field: field 'amount' of "),
        ({"time_field": "ts"}, "event.time_field: "),
        ({"time_field": "card_id"}, "event.time_field: field 'card_id' of "),
        ({"entity_field": "card"}, "event.entity_field: "),
        ({"entity_field": "amount"}, "event.entity_field: field 'amount' of "),
    ],
)
def test_a_wrong_or_mistyped_field_stops_run_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], event: dict[str, str], expected: str
) -> None:
    line = one_line(capsys, ["run", "--config", str(config(tmp_path, event))])
    assert line.startswith(f"streamer: {expected}")
    field = next(iter(event.values()))
    assert " is " in line or "has no field" in line
    assert f"'{field}'" in line and f"; point {expected.split(':')[0]} at the field holding" in line  # the fix


def test_event_time_in_microseconds_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(capsys, ["run", "--config", str(config(tmp_path, {}, micros_schema(tmp_path)))])
    assert line.startswith("streamer: event.time_field: field 'event_time' of ") and "timestamp-micros" in line


def test_defaults_for_a_nullable_entity_need_a_nullable_entity_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nullable = nullable_payments(tmp_path, ("card_id",))
    line = one_line(capsys, ["run", "--config", str(config(tmp_path, {"missing_entity": "defaults"}, nullable))])
    assert line.startswith("streamer: event.missing_entity: defaults") and '["null", "string"]' in line


def test_a_config_without_the_event_section_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, {})
    tree = yaml.safe_load(path.read_text())
    del tree["event"]
    path.write_text(yaml.safe_dump(tree))
    assert "event: Field required" in one_line(capsys, ["run", "--config", str(path)])


def test_score_checks_the_contract_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["score", "--config", str(config(tmp_path, {"time_field": "ts"}))]
    line = one_line(capsys, [*argv, "--input", str(tmp_path / "in.avro"), "--output", str(tmp_path / "out.avro")])
    assert line.startswith("streamer: event.time_field: ")


def test_entity_features_need_a_string_id_and_a_numeric_value() -> None:
    inputs = AvroCodec(SCHEMAS / "payment.avsc")
    spec = FeatureSpec.from_dict(
        {"features": [{"name": "n", "kind": "entity", "entity": "amount", "aggregate": "count"}]}
    )
    with pytest.raises(Fatal, match=r"^feature spec: n.entity: field 'amount' of .* is \"double\""):
        check_entity_features(spec, inputs)
    spec = FeatureSpec.from_dict(
        {"features": [{"name": "s", "kind": "entity", "entity": "card_id", "aggregate": "sum", "of": "mcc"}]}
    )
    with pytest.raises(
        Fatal, match=r"^feature spec: s.of: field 'mcc' of .* not a double or float or int or long \(null allowed\)"
    ):
        check_entity_features(spec, inputs)


def test_the_derived_scored_schema_is_printed_and_the_shipped_one_matches_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_model: Path
) -> None:
    path = config(tmp_path, {}, model=demo_model)
    tree = yaml.safe_load(path.read_text())
    tree["outputs"] = {"pass_through": ["amount", "country"]}
    path.write_text(yaml.safe_dump(tree))
    assert main(["schema", "scored", "--config", str(path)]) == 0
    derived = json.loads(capsys.readouterr().out)
    names = [field["name"] for field in derived["fields"]]
    assert names[:2] == ["event_id", "entity_id"] and names[-2:] == ["amount", "country"]
    settings = load_settings(config(tmp_path, {}, model=demo_model), environ={})
    inputs = AvroCodec(SCHEMAS / "payment.avsc")
    outputs = load_model(settings.model, inputs.field_types).outputs
    check_scored_schema(derived_schema(settings, inputs, outputs), AvroCodec(SCHEMAS / "scored_payment.avsc"))
    written = tmp_path / "scored.avsc"
    written.write_text(json.dumps(derived))
    check_scored_schema(derived, AvroCodec(written))  # what it prints is what it accepts


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda fields: fields.pop(3), "has no field 'score', which the outputs write"),
        (lambda fields: fields[3].update(type="float"), 'field \'score\' of .* is "float", the outputs write "double"'),
        (
            lambda fields: fields.append({"name": "extra", "type": "string"}),
            r"has fields \['extra'\] the outputs do not write",
        ),
    ],
)
def test_a_scored_schema_that_does_not_match_the_outputs_stops_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, expected: str, demo_model: Path
) -> None:
    declared = json.loads((SCHEMAS / "scored_payment.avsc").read_text())
    change(declared["fields"])
    scored = tmp_path / "scored.avsc"
    scored.write_text(json.dumps(declared))
    path = config(tmp_path, {}, model=demo_model)
    tree = yaml.safe_load(path.read_text())
    tree["schemas"]["scored"] = str(scored)
    path.write_text(yaml.safe_dump(tree))
    line = fatal_line(capsys, ["run", "--config", str(path)])
    assert re.search(f"^streamer: schemas.scored: .*{expected}.*streamer schema scored --config", line), line


def test_a_pass_through_field_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_model: Path) -> None:
    path = config(tmp_path, {}, model=demo_model)
    tree = yaml.safe_load(path.read_text())
    tree["outputs"] = {"pass_through": ["amount", "nope"]}
    path.write_text(yaml.safe_dump(tree))
    assert fatal_line(capsys, ["run", "--config", str(path)]).startswith("streamer: outputs.pass_through: ")
