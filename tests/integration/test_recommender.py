"""The recommender example end to end on the real stack: views produced to Kafka, a real Worker,
the scored topic read back. Streamed top-k ids and scores equal the offline signature call on
the same events, and `streamer score` writes the same records."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import fastavro
import numpy as np
import pytest
import yaml

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of
from streamer.model import load_model
from streamer.offline import score_file
from streamer.pipeline import to_tensors
from streamer.worker import Worker
from tests.conftest import ROOT
from tests.integration.conftest import SettingsFactory, produce_values, read_topic

EXAMPLE = ROOT / "examples" / "recommender"
EVENTS = 600


def example() -> ModuleType:
    """examples/recommender/recommender.py, imported by path as a user runs it."""
    spec = importlib.util.spec_from_file_location("recommender_example", EXAMPLE / "recommender.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recommender_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained and exported by the example script, as the README's steps do."""
    base = tmp_path_factory.mktemp("models") / "recommender"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "recommender.py"), "train", str(base)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return base


def test_streamed_top_k_equals_the_signature_and_offline_score(
    make_settings: SettingsFactory, recommender_model: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    confident = f"confident-{uuid.uuid4().hex[:10]}"
    rules = [rule | {"topic": confident} for rule in config["outputs"]["rules"]]
    settings = make_settings(
        schemas={key: str(ROOT / config["schemas"][key]) for key in ("input", "scored")},  # the shipped schemas
        model={"path": str(recommender_model)},
        event=config["event"],
        outputs=config["outputs"] | {"rules": rules},
        drift=config["drift"],
    )
    recommender = example()
    columns, _ = recommender.synth_views(EVENTS, np.random.default_rng(5))
    codec = AvroCodec(settings.schemas.input)
    records = rows_of(columns)
    produce_values(settings, codec.encode(records), [r["user_id"].encode() for r in records])

    stats = Worker(settings).run(max_events=EVENTS, timeout_s=180)

    assert (stats.scored, stats.dead_lettered) == (EVENTS, 0)
    brokers = str(settings.admin_config()["bootstrap.servers"])
    scored_codec = AvroCodec(settings.schemas.scored)
    streamed = {
        row["event_id"]: row
        for row in (scored_codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.scored, EVENTS))
    }
    assert len(streamed) == EVENTS

    model = load_model(settings.model, codec.field_types, settings.outputs.values)
    direct = model.signature(**to_tensors(columns, model.inputs, EVENTS))  # one unpadded call
    ids = direct["top_items"].numpy().astype(str).tolist()
    scores = direct["top_scores"].numpy()
    order = columns["event_id"].tolist()
    assert [streamed[i]["top_items"] for i in order] == ids
    delta = np.abs(np.array([streamed[i]["top_scores"] for i in order]) - scores).max()
    print(f"streamed vs signature: {EVENTS} events, top-5 ids equal, max |Δ score| = {delta:.2e}")
    assert delta <= 1e-6
    assert [streamed[i]["entity_id"] for i in order] == columns["user_id"].tolist()
    assert [streamed[i]["confident"] for i in order] == (scores[:, 0] >= rules[0]["at_least"]).tolist()

    routed = {scored_codec.decode_one(m.value)["event_id"] for m in read_topic(brokers, confident, 1, timeout_s=30)}
    assert routed == {i for i in order if streamed[i]["confident"]}

    events_file, scored_file = tmp_path / "views.avro", tmp_path / "recommended.avro"
    codec.write_container(events_file, records)
    summary = score_file(settings, events_file, scored_file)
    assert (summary.read, summary.scored, summary.dead_lettered) == (EVENTS, EVENTS, 0)
    offline = {row["event_id"]: row for row in _rows(scored_codec, scored_file)}
    assert [offline[i]["top_items"] for i in order] == ids
    assert np.abs(np.array([offline[i]["top_scores"] for i in order]) - scores).max() <= 1e-6


def _rows(codec: AvroCodec, path: Path) -> list[dict[str, Any]]:
    with open(path, "rb") as stream:
        return [dict(row) for row in fastavro.reader(stream, codec.schema)]  # type: ignore[arg-type]
