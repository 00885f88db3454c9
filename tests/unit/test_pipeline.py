from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from streamer.codec import AvroCodec
from streamer.demo.payments import synth_payments
from streamer.features import replay_aggregates
from streamer.lifecycle import Serving, entity_buckets, routed
from streamer.model import PackedCall, load_model
from streamer.pipeline import admit, padded_size, score, score_batch
from streamer.preprocess import raw_tensors
from streamer.records import EventBatch, Rejection
from streamer.settings import ModelSettings
from tests.conftest import SCHEMAS, STRICT_MAX_AMOUNT, STRICT_NAN_AMOUNT


def test_padded_size_picks_smallest_bucket() -> None:
    assert padded_size(1, (64, 256)) == 64
    assert padded_size(64, (64, 256)) == 64
    assert padded_size(65, (64, 256)) == 256
    assert padded_size(300, (64, 256)) == 300


def test_packed_call_hands_the_signature_its_named_columns_padded_with_the_last_row() -> None:
    inputs = {"s": tf.string, "x": tf.float32, "t": tf.string, "y": tf.float32}
    packed = PackedCall.of(lambda **named: named, inputs)
    assert [names for _, names in packed.groups] == [("s", "t"), ("x", "y")]
    columns = {
        "s": np.array(["a", ""], dtype=object),
        "t": np.array(["b", "c"], dtype=object),
        "x": np.array([1.0, 2.0]),
        "y": np.array([3.0, 4.0], np.float32),
    }
    named = packed(packed.tensors(columns, 4))
    assert named["s"].numpy().tolist() == [b"a", b"", b"", b""]
    assert named["t"].numpy().tolist() == [b"b", b"c", b"c", b"c"]
    assert named["x"].numpy().tolist() == [1.0, 2.0, 2.0, 2.0]
    assert named["y"].dtype == tf.float32 and named["y"].numpy().tolist() == [3.0, 4.0, 4.0, 4.0]


def test_padded_scores_equal_unpadded_signature_call(demo_model: Path) -> None:
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=demo_model), fields)
    columns, _ = synth_payments(37, np.random.default_rng(3))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    events = EventBatch(columns, np.zeros(37, np.int32), np.arange(37, dtype=np.int64), [None] * 37)
    padded = score(model, events, (64,))["score"]
    direct = model.signature(**raw_tensors(columns, model.inputs))["score"].numpy()
    assert padded.shape == (37,)
    np.testing.assert_allclose(padded, direct, atol=1e-6)
    # unpadded, the packed call the worker makes is the named signature bit for bit
    np.testing.assert_array_equal(score(model, events, (37,))["score"], direct.astype(np.float64))


def test_rejected_rows_are_isolated_and_the_rest_scored_as_alone(strict_model: Path) -> None:
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=strict_model), fields)
    columns, _ = synth_payments(300, np.random.default_rng(4))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    columns["amount"][[7, 150, 151]] = STRICT_MAX_AMOUNT * 10
    columns["amount"][299] = STRICT_NAN_AMOUNT
    events = EventBatch(columns, np.zeros(300, np.int32), np.arange(300, dtype=np.int64), [None] * 300)

    scored, rejected = score_batch(Serving(model), events, (64, 256), 0, None, "card_id")

    assert sorted(rejected) == [7, 150, 151, 299]
    assert all("amount out of range" in rejected[row].reason for row in (7, 150, 151)), rejected
    assert "must be finite" in rejected[299].reason
    assert {refusal.error_class for refusal in rejected.values()} == {"ModelRejected"}
    kept = np.setdiff1d(np.arange(300), [7, 150, 151, 299])
    assert scored.events.offsets.tolist() == kept.tolist()
    alone = score(model, events.take(kept), (64, 256))["score"]
    np.testing.assert_allclose(scored.scores, alone, atol=1e-6)


def test_admit_refuses_missing_entities_under_dead_letter_and_null_inputs_always() -> None:
    columns = {
        "card": np.array(["a", None, "", "b", "c"], dtype=object),
        "shop": np.array(["s", "s", "s", None, "s"], dtype=object),
        "amount": np.array([1.0, 2.0, None, 4.0, None], dtype=object),
    }
    events = EventBatch(columns, np.zeros(5, np.int32), np.arange(5, dtype=np.int64), [None] * 5)
    needed = {"amount": tf.float64, "score_me": tf.float32}  # an entity feature: not a raw column

    kept, refused = admit(events, ("card", "shop"), "dead_letter", needed)

    assert kept.offsets.tolist() == [0]
    assert refused == {
        1: Rejection("MissingEntity", "entity field card is null"),
        2: Rejection("MissingEntity", "entity field card is empty"),
        3: Rejection("MissingEntity", "entity field shop is null"),
        4: Rejection(
            "NullInput",
            "field amount is null, and nothing takes a null there (a feature's missing:, never an aggregate)",
        ),
    }
    kept, refused = admit(events, ("card", "shop"), "defaults", needed)
    assert kept.offsets.tolist() == [0, 1, 3] and sorted(refused) == [2, 4]


def test_a_null_numeric_input_is_refused_and_the_rest_scored(demo_model: Path) -> None:
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=demo_model), fields)
    columns, _ = synth_payments(40, np.random.default_rng(8))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    amounts = columns["amount"].astype(object)  # as a ["null", "double"] field decodes
    amounts[[5, 6]] = None
    events = EventBatch(
        {**columns, "amount": amounts}, np.zeros(40, np.int32), np.arange(40, dtype=np.int64), [None] * 40
    )

    scored, rejected = score_batch(Serving(model), events, (64,), 0, None, "card_id")

    assert rejected == {
        row: Rejection(
            "NullInput",
            "field amount is null, and nothing takes a null there (a feature's missing:, never an aggregate)",
        )
        for row in (5, 6)
    }
    kept = np.setdiff1d(np.arange(40), [5, 6])
    alone = score(model, EventBatch(columns, events.partitions, events.offsets, events.keys).take(kept), (64,))["score"]
    np.testing.assert_array_equal(scored.scores, alone)


def test_a_batch_refused_whole_scores_nothing(demo_model: Path) -> None:
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=demo_model), fields)
    columns, _ = synth_payments(2, np.random.default_rng(9))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    events = EventBatch(
        {**columns, "amount": np.array([None, None], dtype=object)}, np.zeros(2, np.int32), np.arange(2), [None] * 2
    )
    scored, rejected = score_batch(Serving(model), events, (64,), 0, None, "card_id")
    assert sorted(rejected) == [0, 1] and len(scored.events) == 0


def test_a_canary_split_keeps_input_order_and_each_events_version_and_outputs(strict_model: Path) -> None:
    """The canary's and the primary's rows are scored apart and put back in input order, the
    rejected ones left out; the shadow scores every row it can."""
    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(ModelSettings(path=strict_model), fields)
    candidate = replace(model, version=2)
    columns, _ = synth_payments(200, np.random.default_rng(12))
    columns |= replay_aggregates(model.spec.entity_features(), columns, "event_time")
    columns["amount"][[3, 120]] = STRICT_MAX_AMOUNT * 10
    events = EventBatch(columns, np.zeros(200, np.int32), np.arange(200, dtype=np.int64), [None] * 200)

    scored, rejected = score_batch(Serving(model, candidate, 0.5, 1.0), events, (64, 256), 0, None, "card_id")

    kept = np.setdiff1d(np.arange(200), [3, 120])
    assert sorted(rejected) == [3, 120] and scored.events.offsets.tolist() == kept.tolist()
    canary = routed(entity_buckets(columns["card_id"][kept]), 0.5)
    assert 0 < canary.sum() < len(kept) and (scored.model_versions == np.where(canary, 2, 1)).all()
    alone = score(model, events.take(kept), (256,))["score"]
    np.testing.assert_allclose(scored.values["score"], alone, atol=1e-6)
    np.testing.assert_allclose(scored.scores, alone, atol=1e-6)
    assert scored.shadow_scores is not None and scored.shadow_version == 2
    np.testing.assert_allclose(scored.shadow_scores, alone, atol=1e-6)  # the same graph, shadowing every row
