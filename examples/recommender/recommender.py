"""A recommender served by streamer: page views in, the top k items per view out.

    .venv/bin/python examples/recommender/recommender.py train models/recommender
    .venv/bin/python examples/recommender/recommender.py events views.avro --events 1000
    .venv/bin/python examples/recommender/recommender.py produce --config examples/recommender/config.yaml
    .venv/bin/python examples/recommender/recommender.py show recommended.avro

The model is a two-tower retrieval model in the TF-Recommenders shape: a user tower (an embedding
of the user id, with the device and hour of the view) makes a query vector, the item tower is one
embedding per catalog item (the output layer's columns), and their dot products, softmaxed over
the catalog, rank it. The exported signature takes the raw view columns (the preprocessing graph
is inside, as in the fraud demo) and returns the top K item ids and scores, as a TFRS
`BruteForce` index would; `outputs.values` selects them as one top-k output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import fastavro
import keras
import numpy as np
import tensorflow as tf

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of  # columns → Avro rows (a generic helper the fraud demo holds)
from streamer.feature_spec import Categorical, FeatureSpec
from streamer.model import export_package
from streamer.preprocess import Preprocessor, analyze, batches_of, training_dataset

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "views.avsc"
SPEC = HERE / "features.yaml"
K = 5
USERS, GENRES, PER_GENRE = 400, 6, 20
ITEMS = np.array([f"item-{i:04d}" for i in range(GENRES * PER_GENRE)])
DEVICES = np.array(["mobile", "desktop", "tv"])
START_MS = 1_767_225_600_000  # 2026-01-01


def synth_views(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`n` page views as columns, and the catalog index of the item each user then clicked: users
    favour a genre, TVs pull towards genre 5 and evenings towards genre 4."""
    users = rng.integers(0, USERS, n)
    favourite = users % GENRES
    devices = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    times = START_MS + np.sort(rng.integers(0, 7 * 86_400_000, n))
    evening = (times // 3_600_000 % 24) >= 18
    genre = np.where(rng.random(n) < 0.6, favourite, rng.integers(0, GENRES, n))
    genre = np.where((devices == 2) & (rng.random(n) < 0.7), 5, genre)
    genre = np.where(evening & (rng.random(n) < 0.3), 4, genre)
    within = np.minimum(rng.zipf(1.6, n) - 1, PER_GENRE - 1)  # a few popular items per genre
    columns = {
        "event_id": np.array([f"view-{i:08d}" for i in range(n)], dtype=object),
        "user_id": np.array([f"user-{u:04d}" for u in users], dtype=object),
        "event_time": times.astype(np.int64),
        "device": DEVICES[devices].astype(object),
    }
    return columns, (genre * PER_GENRE + within).astype(np.int64)


class TopK(keras.Model):
    """The scorer's probabilities over the catalog → the K best item ids and their scores."""

    def __init__(self, scorer: keras.Model, items: np.ndarray, k: int) -> None:
        super().__init__()
        self.scorer = scorer
        self.items = tf.constant(items)
        self.k = k

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        best = tf.math.top_k(self.scorer(features, training=training), k=self.k)
        return {"top_items": tf.gather(self.items, best.indices), "top_scores": best.values}


def train(out: Path, version: int = 1, views: int = 20_000, epochs: int = 4) -> Path:
    """Train on synthetic views and export `<out>/<version>`: a package `streamer run` serves."""
    keras.utils.set_random_seed(0)
    spec = FeatureSpec.load(SPEC)
    raw_columns = spec.raw_columns(AvroCodec(SCHEMA).field_types)
    columns, clicked = synth_views(views, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as vocabularies:
        preprocessor = Preprocessor(spec, analyze(spec, batches_of(columns, 4096)), Path(vocabularies))
        user = next(f for f in spec.features if isinstance(f, Categorical) and f.name == "user")
        inputs = {
            f.name: keras.Input((preprocessor.width(f),), name=f.name, dtype="int64" if f is user else "float32")
            for f in spec.features
        }
        user_vector = keras.layers.Flatten()(keras.layers.Embedding(preprocessor.categories(user), 16)(inputs["user"]))
        query = keras.layers.Dense(16, activation="relu")(
            keras.layers.Concatenate()([user_vector, inputs["device"], inputs["hour"]])
        )
        scorer = keras.Model(inputs, keras.layers.Dense(len(ITEMS), activation="softmax")(query))  # item tower
        scorer.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        dataset = training_dataset(preprocessor, raw_columns, columns, clicked, network_input="features")
        scorer.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
        return export_package(out, version, preprocessor, TopK(scorer, ITEMS, K), raw_columns, network_input="features")


def write_events(path: Path, n: int, seed: int) -> None:
    """`n` synthetic views as an Avro container file, for `streamer score`."""
    columns, _ = synth_views(n, np.random.default_rng(seed))
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*(c.tolist() for c in columns.values()), strict=True)
    ]
    AvroCodec(SCHEMA).write_container(path, rows)


def produce(config: Path, n: int, seed: int) -> None:
    """`n` synthetic views onto the config's input topic, keyed by user."""
    from confluent_kafka import Producer

    from streamer.settings import load_settings

    settings = load_settings(config)
    codec = AvroCodec(settings.schemas.input)
    producer = Producer(settings.producer_config())
    for record in rows_of(synth_views(n, np.random.default_rng(seed))[0]):
        producer.produce(settings.topics.input, codec.encode_one(record), str(record["user_id"]).encode())
        producer.poll(0)
    producer.flush(30)


def show(path: Path, count: int) -> None:
    with open(path, "rb") as stream:
        for _, record in zip(range(count), fastavro.reader(stream), strict=False):
            print(json.dumps(record, default=str))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command: Any = commands.add_parser("train", help="train and export a model version")
    command.add_argument("out", type=Path, nargs="?", default=Path("models/recommender"))
    command.add_argument("--version", type=int, default=1)
    command = commands.add_parser("events", help="write synthetic views to an Avro container file")
    command.add_argument("out", type=Path)
    command.add_argument("--events", type=int, default=1000)
    command.add_argument("--seed", type=int, default=1)
    command = commands.add_parser("produce", help="produce synthetic views to the config's input topic")
    command.add_argument("--config", type=Path, default=HERE / "config.yaml")
    command.add_argument("--events", type=int, default=1000)
    command.add_argument("--seed", type=int, default=1)
    command = commands.add_parser("show", help="print the first records of an Avro container file")
    command.add_argument("path", type=Path)
    command.add_argument("--count", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "train":
        if (args.out / str(args.version)).exists():
            print(f"model {args.out / str(args.version)} exists; versions are immutable, keeping it")
        else:
            print(f"exported {train(args.out, args.version)}")
    elif args.command == "events":
        write_events(args.out, args.events, args.seed)
    elif args.command == "produce":
        produce(args.config, args.events, args.seed)
    else:
        show(args.path, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
