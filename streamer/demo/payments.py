"""Synthetic card payments whose fraud label depends on their features, and the demo model
trained on them with the public API (`streamer model export-demo`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from streamer.codec import AvroCodec
from streamer.feature_spec import FeatureSpec
from streamer.features import replay_aggregates
from streamer.model import export_package
from streamer.preprocess import Preprocessor, analyze, batches_of, training_dataset
from streamer.records import Columns

COUNTRIES = np.array(["US", "GB", "DE", "FR", "NL", "ES", "IT", "BR", "IN", "NG", "PL", "SE"])
CURRENCY_OF = {"US": "USD", "GB": "GBP", "BR": "BRL", "IN": "INR", "NG": "NGN", "PL": "PLN", "SE": "SEK"}
RISKY_MCCS = np.array(["7995", "6051", "4829", "5967"])  # gambling, quasi-cash, transfers, direct marketing
MCCS = np.concatenate([np.array(["5411", "5812", "5541", "5999", "4111", "5732", "5311", "7011"]), RISKY_MCCS])
CHANNELS = np.array(["pos", "ecom", "atm", "moto"])
ENTRY_MODES = np.array(["chip", "contactless", "swipe", "manual", "token"])
DEVICES = np.array(["terminal", "mobile", "desktop", "tablet", "unknown"])
LOAD_CARDS, LOAD_SKEW = 50_000, 0.5  # load/loadgen.py's card population: Zipf popularity, exponent SKEW


def synth_payments(
    n: int, rng: np.random.Generator, id_prefix: str = "", start_ms: int | None = None, cards: int | None = None
) -> tuple[Columns, np.ndarray]:
    """Columns matching schemas/payment.avsc, and a fraud label drawn from a known logit; `cards`
    distinct card ids, one per 20 events by default."""
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    card_country = rng.choice(COUNTRIES, n, p=_zipf(len(COUNTRIES)))
    abroad = rng.random(n) < 0.12
    country = np.where(abroad, rng.choice(COUNTRIES, n), card_country)
    channel = rng.choice(CHANNELS, n, p=[0.55, 0.35, 0.07, 0.03])
    card_present = np.isin(channel, ["pos", "atm"])
    entry_mode = np.where(
        card_present, rng.choice(ENTRY_MODES[:3], n, p=[0.4, 0.5, 0.1]), rng.choice(ENTRY_MODES[3:], n)
    )
    device = np.where(card_present, "terminal", rng.choice(DEVICES[1:], n, p=[0.6, 0.3, 0.05, 0.05]))
    mcc = rng.choice(MCCS, n, p=_zipf(len(MCCS)))
    amount = np.round(np.exp(rng.normal(3.4, 1.2, n)), 2)
    tenure = rng.integers(0, 3650, n).astype(np.int32)
    event_time = start_ms + np.sort(rng.integers(0, 86_400_000, n)).astype(np.int64)
    hour = (event_time // 3_600_000) % 24
    logit = (
        -5.0
        + 0.6 * np.log1p(amount) / 2
        + 1.4 * (amount > 400)
        + 1.3 * ((channel == "ecom") & (entry_mode == "manual"))
        + 1.4 * (country != card_country)
        + 1.6 * np.isin(mcc, RISKY_MCCS)
        + 0.9 * (hour < 5)
        - 0.8 * (tenure > 365)
    )
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    card_numbers = rng.integers(0, cards or max(n // 20, 1), n)
    columns: Columns = {
        "event_id": np.array([f"{id_prefix}{i:09d}" for i in range(n)], dtype=object),
        "card_id": np.array([f"card-{c:07d}" for c in card_numbers], dtype=object),
        "merchant_id": np.array([f"m-{m:05d}" for m in rng.integers(0, 5000, n)], dtype=object),
        "amount": amount,
        "currency": np.array([CURRENCY_OF.get(c, "EUR") for c in country], dtype=object),
        "country": country.astype(object),
        "card_country": card_country.astype(object),
        "mcc": mcc.astype(object),
        "channel": channel.astype(object),
        "entry_mode": entry_mode.astype(object),
        "device_type": device.astype(object),
        "device_id": np.array([None if d == "terminal" else f"dev-{i % 9973}" for i, d in enumerate(device)]),
        "card_present": card_present,
        "customer_tenure_days": tenure,
        "event_time": event_time,
    }
    return columns, labels


def load_payments(
    n: int, rng: np.random.Generator, card_weights: np.ndarray, send_times_ms: np.ndarray, drift: bool, id_prefix: str
) -> Columns:
    """What load/loadgen.py sends: demo payments whose cards come from a population with the given
    popularity, stamped with their send times. `drift` injects what the drift tap must flag: amounts
    triple and 10% of events come from a country never seen in training ("ZZ")."""
    columns, _ = synth_payments(n, rng, id_prefix=id_prefix)
    cards = rng.choice(len(card_weights), n, p=card_weights)
    columns["card_id"] = np.array([f"card-{c:07d}" for c in cards], dtype=object)
    columns["event_time"] = np.asarray(send_times_ms).astype(np.int64)
    if drift:
        columns["amount"] = np.round(columns["amount"] * 3, 2)
        columns["country"] = np.where(rng.random(n) < 0.1, "ZZ", columns["country"]).astype(object)
    return columns


def _zipf(k: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, k + 1)
    return weights / weights.sum()


def rows_of(columns: Columns) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*(columns[n].tolist() for n in names), strict=True)]


def train_demo_model(
    out: Path, spec_path: Path, schema_path: Path, version: int = 1, events: int = 60_000, seed: int | None = None
) -> Path:
    """The public API end to end: analyze, train through `tf.data`, export `<out>/<version>`.

    Versions differ visibly, so a canary or a shadow shows a difference and not training noise
    (one seed for all gave a median score gap of 3.5e-4): each draws its own payments (seed
    6 + version), and an even version is fitted on a subset that leaves out three in four
    legitimate payments, so it scores several times higher. The analysis (vocabularies, drift
    baseline) always sees the whole draw, so no version looks drifted on the same traffic."""
    seed = 6 + version if seed is None else seed
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    spec = FeatureSpec.load(spec_path)
    raw_columns = spec.raw_columns(AvroCodec(schema_path).field_types)
    columns, labels = synth_payments(events, rng)
    columns |= replay_aggregates(spec.entity_features(), columns, "event_time")
    train = {name: column[: events * 9 // 10] for name, column in columns.items()}
    holdout = {name: column[events * 9 // 10 :] for name, column in columns.items()}
    analysis = analyze(spec, batches_of(train, 8192))
    fit_labels = labels[: len(train["amount"])]
    fit = (fit_labels == 1) | (rng.random(len(fit_labels)) < (1.0 if version % 2 else 0.25))
    with tempfile.TemporaryDirectory() as vocabulary_dir:
        preprocessor = Preprocessor(spec, analysis, Path(vocabulary_dir))
        fit_columns = {name: column[fit] for name, column in train.items()}
        dataset = training_dataset(preprocessor, raw_columns, fit_columns, fit_labels[fit])
        width = sum(preprocessor.width(f) for f in spec.features)
        network = keras.Sequential(
            [
                keras.Input((width,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        network.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["auc"])
        network.fit(dataset, epochs=4, verbose=0, shuffle=False)  # the dataset shuffles
        return export_package(out, version, preprocessor, network, raw_columns, holdout=holdout)
