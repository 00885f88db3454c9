"""The scored record from the config and a signature: its derived schema, the check of a model's
outputs, the decision rules and where they route, and records that fastavro reads back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from streamer.codec import AvroCodec
from streamer.errors import Fatal
from streamer.output_settings import ScalarOutput, TopKOutput, VectorOutput
from streamer.outputs import Outputs, derived_schema, signature_problem
from streamer.records import EventBatch, ScoredBatch
from streamer.settings import Settings
from tests.conftest import SCHEMAS

RANKING = {"top_ids": tf.TensorSpec([None, 3], tf.string), "top_scores": tf.TensorSpec([None, 3], tf.float32)}
TOP_K = {"kind": "top_k", "ids": "top_ids", "scores": "top_scores", "k": 3}


def settings(tmp_path: Path, outputs: dict[str, Any], alerts: str | None = "alerts") -> Settings:
    return Settings.model_validate(
        {
            "topics": {"input": "in", "scored": "out", "dlq": "dlq", "alerts": alerts},
            "schemas": {
                "input": str(SCHEMAS / "payment.avsc"),
                "scored": str(tmp_path / "scored.avsc"),
                "dlq": str(SCHEMAS / "dlq_record.avsc"),
            },
            "model": {"path": str(tmp_path), "alert_threshold": 0.5},
            "event": {"entity_field": "card_id"},
            "outputs": outputs,
        }
    )


def fields(schema: dict[str, Any]) -> dict[str, Any]:
    return {field["name"]: field["type"] for field in schema["fields"]}


def test_the_default_is_a_scalar_score_and_an_alert_rule_to_the_alerts_topic(tmp_path: Path) -> None:
    config = settings(tmp_path, {})
    derived = derived_schema(config, AvroCodec(SCHEMAS / "payment.avsc"), {"score": tf.TensorSpec([None], tf.float32)})
    assert fields(derived)["score"] == "double" and fields(derived)["alert"] == "boolean"
    assert [(r.name, r.output, r.at_least, r.topic) for r in config.rules] == [("alert", "score", 0.5, "alerts")]
    assert config.topic_names() == ["in", "out", "alerts", "dlq"]


def test_vector_and_top_k_outputs_become_avro_arrays(tmp_path: Path) -> None:
    config = settings(
        tmp_path,
        {"values": [TOP_K, {"kind": "vector", "output": "user", "length": 4}], "rules": []},
    )
    signature = RANKING | {"user": tf.TensorSpec([None, 4], tf.float64), "other": tf.TensorSpec([None], tf.int64)}
    derived = fields(derived_schema(config, AvroCodec(SCHEMAS / "payment.avsc"), signature))
    assert derived["top_ids"] == {"type": "array", "items": "string"}
    assert derived["top_scores"] == {"type": "array", "items": "double"}
    assert derived["user"] == {"type": "array", "items": "double"}
    assert "other" not in derived and "alert" not in derived and "score" not in derived


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        ({"top_scores": RANKING["top_scores"]}, r"no output 'top_ids' \(has \['top_scores'\]\)"),
        (RANKING | {"top_ids": tf.TensorSpec([None, 5], tf.string)}, r"'top_ids' has shape \[None, 5\].*\[batch, 3\]"),
        (RANKING | {"top_scores": tf.TensorSpec([None, 3], tf.string)}, "'top_scores' is string, not numbers"),
        (RANKING | {"top_ids": tf.TensorSpec([None, 3], tf.float32)}, "'top_ids' is float32, not string or integer"),
        (RANKING | {"top_ids": tf.TensorSpec(None, tf.string)}, "'top_ids' has shape of unknown rank"),
    ],
)
def test_a_signature_that_cannot_fill_the_selection_is_named(signature: dict[str, Any], expected: str) -> None:
    problem = signature_problem((TopKOutput.model_validate(TOP_K),), signature)
    assert problem is not None
    assert "\n" not in problem
    assert re.search(expected, problem), problem


def test_scalar_and_vector_shapes() -> None:
    scalar = (ScalarOutput(output="p"),)
    assert signature_problem(scalar, {"p": tf.TensorSpec([None, 1], tf.float32)}) is None
    assert "wants [batch] or [batch, 1]" in str(signature_problem(scalar, {"p": tf.TensorSpec([None, 2], tf.float32)}))
    vector = (VectorOutput(kind="vector", output="v", length=2),)
    assert signature_problem(vector, {"v": tf.TensorSpec([None, 2], tf.int32)}) is None
    assert "wants [batch, 2]" in str(signature_problem(vector, {"v": tf.TensorSpec([None], tf.float32)}))


def test_a_field_written_twice_is_refused(tmp_path: Path) -> None:
    config = settings(tmp_path, {"values": [{"output": "model_name"}], "rules": []})
    with pytest.raises(Fatal, match=r"^outputs: field 'model_name' is written twice"):
        derived_schema(config, AvroCodec(SCHEMAS / "payment.avsc"), {"model_name": tf.TensorSpec([None], tf.float32)})


def scored_batch(n: int) -> ScoredBatch:
    columns = {
        "event_id": np.array([f"e{i}" for i in range(n)], dtype=object),
        "card_id": np.array([f"c{i}" for i in range(n)], dtype=object),
        "event_time": np.arange(n, dtype=np.int64),
    }
    events = EventBatch(columns, np.zeros(n, np.int32), np.arange(n, dtype=np.int64), [None] * n)
    ids = np.array([[f"i{i}", f"i{i + 1}", f"i{i + 2}"] for i in range(n)], dtype=object)
    scores = np.array([[0.9 - i / 10, 0.2, 0.1] for i in range(n)])
    return ScoredBatch(events, {"top_ids": ids, "top_scores": scores}, scores[:, 0], "rec", np.ones(n, np.int64), 7)


def test_rules_decide_on_the_largest_score_and_route_to_their_topics(tmp_path: Path) -> None:
    rules = [
        {"name": "confident", "output": "top_scores", "at_least": 0.75, "topic": "confident"},
        {"name": "seen", "output": "top_scores", "at_least": 0.0},
    ]
    config = settings(tmp_path, {"values": [TOP_K], "rules": rules})
    inputs = AvroCodec(SCHEMAS / "payment.avsc")
    (tmp_path / "scored.avsc").write_text(json.dumps(derived_schema(config, inputs, RANKING)))
    outputs = Outputs(config, inputs)
    outputs.check(RANKING)
    scored = scored_batch(4)

    [(topic, holds)] = outputs.routes(scored)
    assert topic == "confident" and holds.tolist() == [True, True, False, False]
    assert config.topic_names() == ["in", "out", "alerts", "dlq", "confident"]
    values = outputs.encode_scored(scored)
    first, last = (outputs.scored_codec.decode_one(values[i]) for i in (0, 3))  # fastavro reads them back
    assert first["top_ids"] == ["i0", "i1", "i2"] and first["top_scores"] == [0.9, 0.2, 0.1]
    assert first["confident"] and first["seen"] and not last["confident"]
    assert outputs.rows(scored)[3]["top_ids"] == ["i3", "i4", "i5"]


def test_a_scored_schema_without_the_outputs_is_refused(tmp_path: Path) -> None:
    config = settings(tmp_path, {"values": [TOP_K], "rules": []})
    (tmp_path / "scored.avsc").write_text((SCHEMAS / "scored_payment.avsc").read_text())
    with pytest.raises(Fatal, match=r"^schemas\.scored: .* has no field 'top_ids', which the outputs write"):
        Outputs(config, AvroCodec(SCHEMAS / "payment.avsc")).check(RANKING)
