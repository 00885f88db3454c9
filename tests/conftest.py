"""Shared fixtures: paths to the project's schemas and a small model exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
FEATURE_SPEC = ROOT / "configs" / "features" / "fraud.yaml"


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo fraud model package trained on few events: tests need its shape, not its skill."""
    from streamer.demo import train_demo_model

    base = tmp_path_factory.mktemp("models") / "fraud"
    train_demo_model(base, FEATURE_SPEC, SCHEMAS / "payment.avsc", version=1, events=4000)
    return base


STRICT_MAX_AMOUNT = 1e6  # the strict model refuses larger amounts, as a graph validating its input would
STRICT_NAN_AMOUNT = 4242.42  # and scores NaN for exactly this amount


@pytest.fixture(scope="session")
def strict_model(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo package behind a serving signature that asserts on `amount` and can score NaN:
    the two ways a model rejects an event that decoded fine."""
    import shutil

    import tensorflow as tf

    from streamer.model import BASELINE_FILE, SPEC_FILE, write_manifest

    source = demo_model / "1"
    inner = tf.saved_model.load(str(source))
    serving = inner.signatures["serving_default"]
    _, specs = serving.structured_input_signature
    names = list(specs)

    @tf.function(input_signature=[tf.TensorSpec([None], specs[n].dtype, name=n) for n in names])
    def serve(*columns: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs = dict(zip(names, columns, strict=True))
        amount = tf.cast(inputs["amount"], tf.float64)
        tf.debugging.assert_less_equal(amount, tf.constant(STRICT_MAX_AMOUNT, tf.float64), "amount out of range")
        scores = serving(**inputs)["score"]
        return {"score": tf.where(amount == STRICT_NAN_AMOUNT, tf.constant(float("nan"), scores.dtype), scores)}

    module = tf.Module()
    module.inner = inner
    base = tmp_path_factory.mktemp("strict") / "fraud"
    target = base / "1"
    tf.saved_model.save(module, str(target), signatures={"serving_default": serve})
    for name in (SPEC_FILE, BASELINE_FILE):
        shutil.copy(source / name, target / name)
    write_manifest(target)
    return base
