"""The demo's model versions (a canary of v2 against v1 must show a difference, not training noise)
and its latency report."""

from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo.payments import synth_payments, train_demo_model
from streamer.demo.run import Latencies
from streamer.features import replay_aggregates
from streamer.model import LoadedModel, load_package
from streamer.pipeline import score
from streamer.records import EventBatch
from streamer.settings import ModelSettings
from tests.conftest import FEATURE_SPEC, SCHEMAS

FIELDS = AvroCodec(SCHEMAS / "payment.avsc").field_types


def scores(model: LoadedModel, n: int = 2000) -> np.ndarray:
    columns, _ = synth_payments(n, np.random.default_rng(11))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    return score(model, EventBatch(columns, np.zeros(n, np.int32), np.arange(n, dtype=np.int64), [None] * n), (n,))[
        "score"
    ]


def test_an_even_version_scores_visibly_higher_than_the_odd_one_before(demo_model: Path, tmp_path: Path) -> None:
    base = tmp_path / "fraud"
    train_demo_model(base, FEATURE_SPEC, SCHEMAS / "payment.avsc", version=2, events=4000)
    v1 = scores(load_package(ModelSettings(path=demo_model), 1, FIELDS))
    v2 = scores(load_package(ModelSettings(path=base), 2, FIELDS))
    print(f"median score v1 {np.median(v1):.4f}, v2 {np.median(v2):.4f}")
    assert np.median(v2) > 2 * np.median(v1)
    assert np.median(np.abs(v2 - v1)) > 0.01


def test_latencies_of_a_stream_count_only_what_was_read_back() -> None:
    sent = {f"e{i}": 100.0 + i * 0.01 for i in range(100)}
    arrivals = {event: at + 0.02 for event, at in list(sent.items())[:90]}
    latency = Latencies.of(sent, arrivals)
    assert latency.events == 90 and round(latency.p50_ms) == round(latency.p99_ms) == 20
    assert Latencies.of(sent, {}).events == 0
