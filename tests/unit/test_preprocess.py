from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from streamer.feature_spec import Categorical, FeatureSpec
from streamer.model import TRANSFORM_SIGNATURE, export_package, load_model
from streamer.pipeline import score
from streamer.preprocess import Preprocessor, analyze, batches_of, raw_tensors, training_dataset
from streamer.records import EventBatch
from streamer.settings import ModelSettings
from tests.conftest import FIELDS, spec_of


def test_analyze_constants_over_several_batches() -> None:
    spec = spec_of(
        {"name": "amount", "kind": "numeric", "log1p": True, "clip": [0, 1000]},
        {"name": "bucket", "source": "amount", "kind": "numeric", "bucketize": 4},
        {"name": "country", "kind": "categorical", "top_k": 2},
    )
    amount = np.arange(1, 1001, dtype=np.float64)
    country = np.array(["DE"] * 500 + ["FR"] * 300 + ["NL"] * 150 + ["SE"] * 50, dtype=object)
    analysis = analyze(spec, batches_of({"amount": amount, "country": country}, 128))
    mean, std = analysis.moments["amount"]
    expected = np.log1p(amount).astype(np.float32)
    assert mean == pytest.approx(expected.mean(), rel=1e-5)
    assert std == pytest.approx(expected.std(), rel=1e-4)
    np.testing.assert_allclose(analysis.boundaries["bucket"], [250.75, 500.5, 750.25])
    assert analysis.vocabularies["country"] == ["DE", "FR"]
    assert analysis.baseline["features"]["country"]["counts"] == [500, 300, 150, 50, 0]
    assert sum(analysis.baseline["features"]["amount"]["counts"]) == 1000


def test_unseen_category_lands_in_an_oov_bucket(tmp_path: Path) -> None:
    spec = spec_of({"name": "country", "kind": "categorical", "top_k": 3, "oov_buckets": 2, "encoding": "index"})
    train = {"country": np.array(["DE", "DE", "FR", "NL", "NL", "NL"], dtype=object)}
    pre = Preprocessor(spec, analyze(spec, [train]), tmp_path)
    ids = pre({"country": tf.constant(["NL", "DE", "FR", "ZZ", "XX", ""])})["country"].numpy().ravel()
    assert ids[:3].tolist() == [0, 1, 2]  # by frequency
    assert all(3 <= i < 5 for i in ids[3:])  # unseen: one of the 2 OOV buckets, no error
    onehot = Categorical(name="country", kind="categorical", top_k=3, oov_buckets=2)
    assert Preprocessor(spec_of(onehot.model_dump()), analyze(spec, [train]), tmp_path).width(onehot) == 5


def test_weekday_and_hour_of_a_known_time(tmp_path: Path) -> None:
    spec = spec_of(
        {"name": "wd", "source": "ts", "kind": "timestamp", "part": "weekday"},
        {"name": "h", "source": "ts", "kind": "timestamp", "part": "hour"},
    )
    pre = Preprocessor(spec, analyze(spec, []), tmp_path)
    monday_6h = 4 * 86_400_000 + 6 * 3_600_000  # 1970-01-05 06:00 UTC was a Monday
    out = pre({"ts": tf.constant([monday_6h], tf.int64)})
    np.testing.assert_allclose(out["wd"].numpy(), [[0.0, 1.0]], atol=1e-6)  # angle 0
    np.testing.assert_allclose(out["h"].numpy(), [[1.0, 0.0]], atol=1e-6)  # quarter turn


def trained(
    spec: FeatureSpec, raw: dict[str, tf.DType], columns: dict[str, np.ndarray], labels: np.ndarray, folder: Path
) -> tuple[Preprocessor, keras.Model, tf.Tensor, np.ndarray]:
    """A small network trained through `training_dataset`; its features and scores of every row
    as training computes them."""
    pre = Preprocessor(spec, analyze(spec, batches_of(columns, 100)), folder / "vocab")
    width = sum(pre.width(f) for f in spec.features)
    network = keras.Sequential([keras.Input((width,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1, "sigmoid")])
    network.compile("adam", "binary_crossentropy")
    network.fit(training_dataset(pre, raw, columns, labels, batch_size=64), epochs=1, verbose=0, shuffle=False)
    n = len(labels)
    features, _ = next(iter(training_dataset(pre, raw, columns, labels, batch_size=n, shuffle_seed=None)))
    return pre, network, features, tf.function(lambda x: network(x, training=False))(features).numpy().ravel()


def test_training_path_and_exported_signature_agree(tmp_path: Path) -> None:
    """Train/serve parity: tf.data + preprocessing + network against the SavedModel signature."""
    spec = spec_of(
        {"name": "amount", "kind": "numeric", "log1p": True, "clip": [0, 1e6]},
        {"name": "amount_b", "source": "amount", "kind": "numeric", "bucketize": 5},
        {"name": "country", "kind": "categorical", "top_k": 3},
        {"name": "n", "kind": "numeric", "clip": [0, 100]},
        {"name": "present", "kind": "flag"},
        {"name": "hour", "source": "ts", "kind": "timestamp", "part": "hour"},
    )
    rng = np.random.default_rng(0)
    n = 300
    columns = {
        "amount": rng.exponential(50, n),
        "country": rng.choice(np.array(["DE", "FR", "NL", "SE", "PL"], dtype=object), n),
        "n": rng.integers(0, 200, n).astype(np.int32),
        "present": rng.random(n) < 0.5,
        "ts": rng.integers(0, 10**12, n).astype(np.int64),
    }
    labels = (rng.random(n) < 0.3).astype(np.float32)
    raw = spec.raw_columns(FIELDS)
    pre, network, features, training_scores = trained(spec, raw, columns, labels, tmp_path)
    export_package(tmp_path / "m", 1, pre, network, raw)
    model = load_model(ModelSettings(path=tmp_path / "m"), FIELDS)
    loaded = model.module.signatures[TRANSFORM_SIGNATURE]  # type: ignore[attr-defined]
    served = loaded(**raw_tensors(columns, raw))
    # The preprocessing is the same graph on both sides: bit for bit the same features.
    np.testing.assert_array_equal(tf.concat([served[f.name] for f in spec.features], 1).numpy(), features.numpy())
    # Run as a graph, as Keras does in fit/predict: eager kernels are not fused like the
    # serving graph's, and would differ in the last float32 bit.
    serving_scores = model.signature(**raw_tensors(columns, raw))["score"].numpy()
    np.testing.assert_array_equal(serving_scores, training_scores)


NULLABLE = {
    "amount": ["null", "double"],
    "country": ["null", "string"],
    "n": ["null", "int"],
    "present": ["null", "boolean"],
    "ts": "long",
}


FILLED = (
    {
        "name": "amount",
        "kind": "numeric",
        "log1p": True,
        "clip": [0, 1e6],
        "missing": {"fill": "median", "indicator": True},
    },
    {"name": "amount_b", "source": "amount", "kind": "numeric", "bucketize": 4, "missing": {"fill": "mean"}},
    {"name": "country", "kind": "categorical", "top_k": 3, "missing": {"fill": "mode", "indicator": True}},
    {"name": "n", "kind": "numeric", "clip": [0, 100], "missing": {"fill": "constant", "value": 7}},
    {"name": "present", "kind": "flag", "missing": {"fill": "mode"}},
    {"name": "hour", "source": "ts", "kind": "timestamp", "part": "hour"},
)


def nullable_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns = {
        "amount": rng.exponential(50, n).astype(object),
        "country": rng.choice(np.array(["DE", "FR", "NL", "SE", "PL"], dtype=object), n),
        "n": rng.integers(0, 200, n).astype(object),
        "present": (rng.random(n) < 0.7).astype(object),
        "ts": rng.integers(0, 10**12, n).astype(np.int64),
    }
    for name in ("amount", "country", "n", "present"):
        columns[name][rng.random(n) < 0.2] = None
    return columns


def test_analyze_learns_fills_from_the_non_null_values_and_counts_nulls_in_the_baseline() -> None:
    spec = spec_of(*FILLED)
    assert spec.raw_columns(NULLABLE) == {
        "amount": tf.float64,
        "amount__missing": tf.bool,
        "country": tf.string,
        "country__missing": tf.bool,
        "n": tf.int32,
        "n__missing": tf.bool,
        "present": tf.bool,
        "present__missing": tf.bool,
        "ts": tf.int64,
    }
    columns = nullable_columns(1000, 1)
    analysis = analyze(spec, batches_of(columns, 128))
    given = {
        name: np.array([v for v in columns[name] if v is not None]) for name in ("amount", "country", "n", "present")
    }
    assert analysis.fills["amount"] == pytest.approx(float(np.median(given["amount"].astype(float))))
    assert analysis.fills["amount_b"] == pytest.approx(float(given["amount"].astype(float).mean()))
    values, counts = np.unique(given["country"].astype(str), return_counts=True)
    assert analysis.fills["country"] == values[counts.argmax()]
    assert analysis.fills["n"] == 7 and analysis.fills["present"] is True
    nulls = {name: int((columns[name] == None).sum()) for name in ("amount", "country")}  # noqa: E711
    assert analysis.baseline["features"]["amount"]["missing"] == nulls["amount"]
    assert analysis.baseline["features"]["country"]["missing"] == nulls["country"]


def test_nulls_are_filled_in_the_graph_alike_in_training_and_serving(tmp_path: Path) -> None:
    """Parity holds on rows with nulls, and a null reads as its fill, with the indicator set."""
    spec = spec_of(*FILLED)
    columns = nullable_columns(300, 2)
    labels = (np.random.default_rng(3).random(300) < 0.3).astype(np.float32)
    raw = spec.raw_columns(NULLABLE)
    pre, network, _, training_scores = trained(spec, raw, columns, labels, tmp_path)
    export_package(tmp_path / "m", 1, pre, network, raw, holdout=columns)
    model = load_model(ModelSettings(path=tmp_path / "m"), NULLABLE)

    events = EventBatch(columns, np.zeros(300, np.int32), np.arange(300, dtype=np.int64), [None] * 300)
    np.testing.assert_array_equal(score(model, events, (300,))["score"], training_scores)  # unpadded: the same kernels

    served = model.module.signatures[TRANSFORM_SIGNATURE](**raw_tensors(columns, raw))  # type: ignore[attr-defined]
    null = int(np.flatnonzero(columns["amount"] == None)[0])  # noqa: E711
    explicit = {name: column[null : null + 1].copy() for name, column in columns.items()}
    explicit["amount"][0] = pre.analysis.fills["amount"]
    as_given = model.module.signatures[TRANSFORM_SIGNATURE](**raw_tensors(explicit, raw))  # type: ignore[attr-defined]
    assert served["amount"].numpy()[null, -1] == 1.0  # the indicator
    assert as_given["amount"].numpy()[0, -1] == 0.0
    np.testing.assert_array_equal(served["amount"].numpy()[null, :-1], as_given["amount"].numpy()[0, :-1])
