"""Shared fixtures: paths to the project's schemas and a small model exported once per session."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.feature_spec import FeatureSpec
from streamer.records import RawBatch
from tests.registry_standin import StandInRegistry

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_THRESHOLD = gc.get_threshold()
SCHEMAS = ROOT / "schemas"
FEATURE_SPEC = ROOT / "configs" / "features" / "fraud.yaml"


@pytest.fixture(autouse=True)
def _collector_of_a_fresh_process() -> Iterator[None]:
    """A Worker settles the heap (`streamer.heap`): frozen, and a higher young threshold, for the
    rest of its process. Tests run many workers in one process, so each test ends by giving the
    next the collector a fresh process has, and what it froze becomes collectable again."""
    yield
    gc.unfreeze()
    gc.set_threshold(*COLLECTOR_THRESHOLD)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raw_batch(values: list[bytes | None]) -> RawBatch:
    """Record values as one partition's consecutive records, as a consumer hands them over."""
    n = len(values)
    return RawBatch("t", np.zeros(n, np.int32), np.arange(n, dtype=np.int64), [b"k"] * n, values)


# Input fields of a small schema: one of each Avro type a feature reads.
FIELDS = {"amount": "double", "country": "string", "ts": "long", "present": "boolean", "n": "int"}


def spec_of(*features: dict[str, Any]) -> FeatureSpec:
    """A feature spec of these features, as its YAML would give them."""
    return FeatureSpec.from_dict({"features": list(features)})


def nullable_payments(folder: Path, fields: tuple[str, ...]) -> Path:
    """schemas/payment.avsc with `fields` made ["null", T], as a user's real data often has them."""
    import json

    declared = json.loads((SCHEMAS / "payment.avsc").read_text())
    for field in declared["fields"]:
        if field["name"] in fields:
            field["type"], field["default"] = ["null", field["type"]], None
    path = folder / "nullable_payment.avsc"
    path.write_text(json.dumps(declared))
    return path


@pytest.fixture
def schema_registry() -> Iterator[StandInRegistry]:
    """A stand-in Schema Registry of the test's own (tests/registry_standin.py), BACKWARD by default."""
    with StandInRegistry().running() as registry:
        yield registry


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo fraud model package trained on few events: tests need its shape, not its skill."""
    from streamer.demo.payments import train_demo_model

    base = tmp_path_factory.mktemp("models") / "fraud"
    train_demo_model(base, FEATURE_SPEC, SCHEMAS / "payment.avsc", version=1, events=4000)
    return base


FILLED_FIELDS = ("amount", "customer_tenure_days", "country", "card_present", "merchant_id")
FILLING_SPEC = {
    "features": [
        {
            "name": "amount_log",
            "source": "amount",
            "kind": "numeric",
            "clip": [0, 1e5],
            "log1p": True,
            "missing": {"fill": "median", "indicator": True},
        },
        {
            "name": "tenure",
            "source": "customer_tenure_days",
            "kind": "numeric",
            "clip": [0, 3650],
            "missing": {"fill": "mean"},
        },
        {"name": "country", "kind": "categorical", "top_k": 8, "missing": {"fill": "mode", "indicator": True}},
        {
            "name": "merchant",
            "source": "merchant_id",
            "kind": "categorical",
            "hash_buckets": 16,
            "missing": {"fill": "constant", "value": "?"},
        },
        {"name": "card_present", "kind": "flag", "missing": {"fill": "mode"}},
        {"name": "hour", "source": "event_time", "kind": "timestamp", "part": "hour"},
        {"name": "card_count", "kind": "entity", "entity": "card_id", "aggregate": "count", "half_life_s": 3600},
        {"name": "card_since", "kind": "entity", "entity": "card_id", "aggregate": "since_last", "default": 86400},
    ]
}


@pytest.fixture(scope="session")
def filling_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package whose spec fills the nulls of FILLED_FIELDS, trained with the public API on
    payments where a fifth of those values are null."""
    import keras
    import numpy as np

    from streamer.codec import AvroCodec
    from streamer.demo.payments import synth_payments
    from streamer.features import replay_aggregates
    from streamer.model import export_package
    from streamer.preprocess import Preprocessor, analyze, batches_of, training_dataset

    folder = tmp_path_factory.mktemp("filling")
    keras.utils.set_random_seed(5)
    spec = FeatureSpec.from_dict(FILLING_SPEC)
    raw = spec.raw_columns(AvroCodec(nullable_payments(folder, FILLED_FIELDS)).field_types)
    rng = np.random.default_rng(5)
    columns, labels = synth_payments(3000, rng)
    for name in FILLED_FIELDS:
        columns[name] = columns[name].astype(object)
        columns[name][rng.random(3000) < 0.2] = None
    columns |= replay_aggregates(spec.entity_features(), columns, "event_time")
    pre = Preprocessor(spec, analyze(spec, batches_of(columns, 1000)), folder / "vocabularies")
    width = sum(pre.width(f) for f in spec.features)
    network = keras.Sequential([keras.Input((width,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1, "sigmoid")])
    network.compile("adam", "binary_crossentropy")
    network.fit(training_dataset(pre, raw, columns, labels), epochs=1, verbose=0, shuffle=False)
    export_package(folder / "filling", 1, pre, network, raw, holdout=columns)
    return folder / "filling"


STRICT_MAX_AMOUNT = 1e6  # the strict model refuses larger amounts, as a graph validating its input would
STRICT_NAN_AMOUNT = 4242.42  # and scores NaN for exactly this amount

ScoreTransform = Callable[[dict[str, Any], Any], Any]


def wrap_package(source: Path, target: Path, transform: ScoreTransform) -> Path:
    """A new package whose serving signature is `source`'s with `transform(inputs, scores)` applied:
    the same inputs, spec and baseline, another behaviour, sealed by its own manifest."""
    import shutil

    import tensorflow as tf

    from streamer.model import BASELINE_FILE, SPEC_FILE, write_manifest

    inner = tf.saved_model.load(str(source))
    serving = inner.signatures["serving_default"]
    _, specs = serving.structured_input_signature
    names = list(specs)

    @tf.function(input_signature=[tf.TensorSpec([None], specs[n].dtype, name=n) for n in names])
    def serve(*columns: Any) -> dict[str, Any]:
        inputs = dict(zip(names, columns, strict=True))
        return {"score": transform(inputs, serving(**inputs)["score"])}

    module = tf.Module()
    module.inner = inner
    tf.saved_model.save(module, str(target), signatures={"serving_default": serve})
    for name in (SPEC_FILE, BASELINE_FILE):
        shutil.copy(source / name, target / name)
    write_manifest(target)
    return target


def drop_version(base: Path, source: int, version: int) -> Path:
    """Copy a version under a staging name, then rename, as `export_package` does: a watcher
    never sees half a folder."""
    import shutil

    staging = base / f".{version}-staging"
    shutil.copytree(base / str(source), staging)
    return staging.rename(base / str(version))


def tamper(package: Path) -> None:
    """Flip one byte of the variables: the manifest check must catch it."""
    variables = next((package / "variables").glob("*.data-*"))
    data = bytearray(variables.read_bytes())
    data[len(data) // 2] ^= 0xFF
    variables.write_bytes(bytes(data))


@pytest.fixture(scope="session")
def strict_model(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo package behind a serving signature that asserts on `amount` and can score NaN:
    the two ways a model rejects an event that decoded fine."""
    import tensorflow as tf

    def strict(inputs: dict[str, Any], scores: Any) -> Any:
        amount = tf.cast(inputs["amount"], tf.float64)
        tf.debugging.assert_less_equal(amount, tf.constant(STRICT_MAX_AMOUNT, tf.float64), "amount out of range")
        return tf.where(amount == STRICT_NAN_AMOUNT, tf.constant(float("nan"), scores.dtype), scores)

    base = tmp_path_factory.mktemp("strict") / "fraud"
    wrap_package(demo_model / "1", base / "1", strict)
    return base
