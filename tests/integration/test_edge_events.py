"""Nothing in an event stops the worker: records generated from a nullable input schema, with
nulls, empty and unicode strings, extreme numbers and ids, go through a real run; every one is
scored or dead-lettered with a reason, and `streamer score` on the same records agrees."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.codec import AvroCodec
from streamer.model import load_model
from streamer.offline import dead_letter_path, score_file
from streamer.outputs import derived_schema
from streamer.worker import Worker
from tests.conftest import FILLED_FIELDS, nullable_payments
from tests.integration.conftest import SettingsFactory, produce_values, read_topic

EVENTS = 600
NULLABLE = ("card_id", *FILLED_FIELDS)
STRINGS = ["", " ", "ünïcødé-😀", "x" * 300, "\x00", "card-0000001"]
DOUBLES = [0.0, -0.0, 1e308, -1e308, 5e-324, -1.0, math.nan, math.inf, -math.inf]
INTS = [0, -(2**31), 2**31 - 1]


def edge_records(field_types: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """Records valid under the schema, drawn per field from its type: ordinary values most of the
    time, nulls (where allowed), empty and odd strings, and extremes the rest."""
    rng = np.random.default_rng(seed)
    cards = [f"card-{i:03d}" for i in range(12)]  # few cards, so aggregates see several events each
    records = []
    for i in range(n):
        record: dict[str, Any] = {}
        for name, avro_type in field_types.items():
            nullable = isinstance(avro_type, list)
            base = avro_type[1] if nullable else avro_type
            draw = rng.random()
            if nullable and draw < 0.1:
                record[name] = None
            elif base == "string":
                usual = cards[int(rng.integers(12))] if name == "card_id" else f"{name[:3]}-{rng.integers(5)}"
                record[name] = STRINGS[int(rng.integers(len(STRINGS)))] if draw < 0.25 else usual
            elif base == "double":
                record[name] = DOUBLES[int(rng.integers(len(DOUBLES)))] if draw < 0.2 else float(rng.lognormal(3, 1))
            elif base == "int":
                record[name] = INTS[int(rng.integers(len(INTS)))] if draw < 0.2 else int(rng.integers(0, 3650))
            elif base == "long":  # event time: the epoch, far future, and ordinary
                record[name] = [0, 2**42, 1_700_000_000_000 + i * 1000][int(rng.integers(3)) if draw < 0.2 else 2]
            else:
                record[name] = bool(rng.random() < 0.5)
        record["event_id"] = f"e{i:05d}-{STRINGS[i % len(STRINGS)]}"  # unique, and odd
        records.append(record)
    return records


@pytest.mark.parametrize(("policy", "model"), [("defaults", "filling_model"), ("dead_letter", "demo_model")])
def test_edge_records_are_scored_or_dead_lettered_and_streamed_equals_offline(
    make_settings: SettingsFactory, tmp_path: Path, policy: str, model: str, request: pytest.FixtureRequest
) -> None:
    """The filling model declares what nulls of FILLED_FIELDS become; the demo model declares
    nothing, so its events with a null input are dead letters."""
    input_schema, scored_schema = nullable_payments(tmp_path, NULLABLE), tmp_path / "scored.avsc"
    settings = make_settings(
        topics={"partitions": 2},
        schemas={"input": str(input_schema), "scored": str(scored_schema)},
        model={"path": str(request.getfixturevalue(model))},
        event={"entity_field": "card_id", "missing_entity": policy},
        outputs={"pass_through": ["amount", "country"]},
    )
    codec = AvroCodec(input_schema)
    outputs = load_model(settings.model, codec.field_types).outputs
    scored_schema.write_text(json.dumps(derived_schema(settings, codec, outputs)))  # as `streamer schema scored` does
    records = edge_records(codec.field_types, EVENTS, seed=11)
    produce_values(settings, codec.encode(records), [(r["card_id"] or "").encode() or None for r in records])

    stats = Worker(settings).run(max_events=EVENTS, timeout_s=180)  # returns: the worker stayed up

    assert stats.consumed == EVENTS and stats.scored + stats.dead_lettered == EVENTS
    assert stats.scored > EVENTS // 3  # the edges are a minority: most events are scored
    brokers = str(settings.admin_config()["bootstrap.servers"])
    scored_codec, dlq_codec = AvroCodec(settings.schemas.scored), AvroCodec(settings.schemas.dlq)
    streamed = {
        row["event_id"]: row
        for row in (scored_codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.scored, stats.scored))
    }
    letters = [dlq_codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.dlq, stats.dead_lettered)]
    refused = {codec.decode_one(letter["original_value"])["event_id"]: letter for letter in letters}
    assert len(streamed) == stats.scored and len(refused) == stats.dead_lettered
    assert streamed.keys() | refused.keys() == {r["event_id"] for r in records}
    assert all(letter["error_class"] and letter["error_message"] for letter in letters)
    by_id = {r["event_id"]: r for r in records}
    assert all(
        (row["amount"], row["country"]) == (by_id[i]["amount"], by_id[i]["country"]) for i, row in streamed.items()
    )
    missing_entity = {i for i, r in by_id.items() if not r["card_id"]}
    if policy == "dead_letter":
        assert missing_entity <= refused.keys()
    else:
        assert missing_entity - refused.keys() <= streamed.keys()
        assert any(streamed[i]["entity_id"] is None for i in missing_entity - refused.keys())
    null_amounts = {i for i, r in by_id.items() if r["amount"] is None}
    if model == "demo_model":
        assert null_amounts <= refused.keys()  # no fill declared
    else:
        assert null_amounts - refused.keys() and null_amounts - refused.keys() <= streamed.keys()
        assert not any(letter["error_class"] == "NullInput" for letter in letters)

    events_file, scored_file = tmp_path / "events.avro", tmp_path / "scored.avro"
    codec.write_container(events_file, records)
    summary = score_file(settings, events_file, scored_file)

    assert (summary.scored, summary.dead_lettered) == (stats.scored, stats.dead_lettered)
    offline = {row["event_id"]: row for row in _rows(scored_codec, scored_file)}
    offline_refused = {
        codec.decode_one(letter["original_value"])["event_id"]: letter
        for letter in _rows(dlq_codec, dead_letter_path(scored_file))
    }
    assert offline.keys() == streamed.keys()
    assert {i: r["error_message"] for i, r in offline_refused.items()} == {
        i: r["error_message"] for i, r in refused.items()
    }
    delta = max(abs(offline[i]["score"] - streamed[i]["score"]) for i in streamed)
    assert delta <= 1e-6


def _rows(codec: AvroCodec, path: Path) -> list[dict[str, Any]]:
    import fastavro

    with open(path, "rb") as stream:
        return [dict(row) for row in fastavro.reader(stream, codec.schema)]  # type: ignore[arg-type]
