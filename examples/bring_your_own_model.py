"""Bring your own model: a Keras model of your design on top of streamer's preprocessing.

    .venv/bin/python examples/bring_your_own_model.py models/byom

Writes models/byom/1, a package `streamer run` serves with `model.path: models/byom`.
"""

import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from streamer.codec import AvroCodec
from streamer.demo.payments import synth_payments
from streamer.feature_spec import FeatureSpec
from streamer.model import export_package, verify_package
from streamer.preprocess import Preprocessor, analyze, batches_of, training_dataset

out = Path(sys.argv[1] if len(sys.argv) > 1 else "models/byom")

# 1. The spec: usually a YAML file (FeatureSpec.load); inline here to keep the example in one file.
spec = FeatureSpec.from_dict(
    {
        "features": [
            {"name": "amount", "kind": "numeric", "clip": [0, 100000], "log1p": True},
            {"name": "mcc", "kind": "categorical", "top_k": 20, "oov_buckets": 2, "encoding": "index"},
            {"name": "country", "kind": "categorical", "top_k": 12},
            {"name": "hour", "source": "event_time", "kind": "timestamp", "part": "hour"},
        ]
    }
)
raw_columns = spec.raw_columns(AvroCodec(Path("schemas/payment.avsc")).field_types)

# 2. Your training data, as numpy columns (or batches from AvroCodec.read_container).
columns, labels = synth_payments(20_000, np.random.default_rng(0))

with tempfile.TemporaryDirectory() as vocabularies:
    # 3. One analyze pass fixes the constants; the Preprocessor is the graph both sides use.
    preprocessor = Preprocessor(spec, analyze(spec, batches_of(columns, 4096)), Path(vocabularies))

    # 4. Any Keras model whose named inputs are the transformed features.
    mcc = spec.features[1]
    inputs = {
        f.name: keras.Input((preprocessor.width(f),), name=f.name, dtype="int64" if f is mcc else "float32")
        for f in spec.features
    }
    mcc_vector = keras.layers.Flatten()(keras.layers.Embedding(preprocessor.categories(mcc), 4)(inputs["mcc"]))
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Concatenate()([inputs["amount"], mcc_vector, inputs["country"], inputs["hour"]])
    )
    network = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    network.compile(optimizer="adam", loss="binary_crossentropy")
    dataset = training_dataset(preprocessor, raw_columns, columns, labels, network_input="features")
    network.fit(dataset, epochs=2, verbose=0, shuffle=False)

    # 5. Export: SavedModel taking raw columns, assets, spec, baseline, manifest.
    path = export_package(out, 1, preprocessor, network, raw_columns, holdout=columns, network_input="features")

verify_package(path)
print(f"exported {path}")
