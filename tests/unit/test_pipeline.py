from pathlib import Path

import numpy as np
import tensorflow as tf

from streamer.codec import AvroCodec
from streamer.demo import synth_payments
from streamer.features import replay_aggregates
from streamer.lifecycle import Serving
from streamer.model import load_model
from streamer.pipeline import padded_size, score, score_batch, to_tensors
from streamer.records import EventBatch
from streamer.settings import ModelSettings
from tests.conftest import SCHEMAS, STRICT_MAX_AMOUNT, STRICT_NAN_AMOUNT


def test_padded_size_picks_smallest_bucket() -> None:
    assert padded_size(1, (64, 256)) == 64
    assert padded_size(64, (64, 256)) == 64
    assert padded_size(65, (64, 256)) == 256
    assert padded_size(300, (64, 256)) == 300


def test_padding_repeats_last_row_and_nulls_become_empty_strings() -> None:
    columns = {"s": np.array(["a", None], dtype=object), "x": np.array([1.0, 2.0])}
    tensors = to_tensors(columns, {"s": tf.string, "x": tf.float32}, 4)
    assert tensors["s"].numpy().tolist() == [b"a", b"", b"", b""]
    assert tensors["x"].numpy().tolist() == [1.0, 2.0, 2.0, 2.0]


def test_padded_scores_equal_unpadded_signature_call(demo_model: Path) -> None:
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=demo_model, score_output="score"), fields)
    columns, _ = synth_payments(37, np.random.default_rng(3))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    events = EventBatch(columns, np.zeros(37, np.int32), np.arange(37, dtype=np.int64), [None] * 37)
    padded = score(model, events, (64,))
    direct = model.signature(**to_tensors(columns, model.inputs, 37))["score"].numpy()
    assert padded.shape == (37,)
    np.testing.assert_allclose(padded, direct, atol=1e-6)


def test_rejected_rows_are_isolated_and_the_rest_scored_as_alone(strict_model: Path) -> None:
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=strict_model, score_output="score"), fields)
    columns, _ = synth_payments(300, np.random.default_rng(4))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    columns["amount"][[7, 150, 151]] = STRICT_MAX_AMOUNT * 10
    columns["amount"][299] = STRICT_NAN_AMOUNT
    events = EventBatch(columns, np.zeros(300, np.int32), np.arange(300, dtype=np.int64), [None] * 300)

    scored, rejected = score_batch(Serving(model), events, (64, 256), 0.5, 0)

    assert sorted(rejected) == [7, 150, 151, 299]
    assert all("amount out of range" in rejected[row] for row in (7, 150, 151)), rejected
    assert "must be finite" in rejected[299]
    kept = np.setdiff1d(np.arange(300), [7, 150, 151, 299])
    assert scored.events.offsets.tolist() == kept.tolist()
    alone = score(model, events.take(kept), (64, 256))
    np.testing.assert_allclose(scored.scores, alone, atol=1e-6)
