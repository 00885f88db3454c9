"""Preprocessing defined once (TF Transform style): a feature spec, one analyze pass, one graph.

    spec = FeatureSpec.load("configs/features/<model>.yaml")
    analysis = analyze(spec, input_fields, batches_of_columns)   # constants + drift baseline
    preprocessor = Preprocessor(spec, analysis, vocab_dir)       # a tf.Module
    dataset.map(preprocessor)                                    # training
    preprocessor(batch_tensors)                                  # inside the serving signature

The same `Preprocessor` is mapped over `tf.data` in training and called on batch tensors inside
the exported signature, so online features cannot drift from offline ones through code skew.
Vocabularies are text files the SavedModel carries as assets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from streamer.drift.histograms import TOP_VALUES, FeatureBaseline, bin_numeric, numeric_edges
from streamer.errors import Fatal
from streamer.feature_spec import Categorical, Entity, Feature, FeatureSpec, Flag, Numeric, Timestamp
from streamer.missing import FillValue, as_floats, fill_tensor, presence_input, raw_column

MILLIS_PER_HOUR = 3_600_000
MILLIS_PER_DAY = 86_400_000
QUANTILE_SAMPLE = 200_000  # values kept per numeric feature for quantiles: memory stays bounded
MISSING = "\x00missing"  # counts None values of a categorical column apart from its values


@dataclass
class Analysis:
    """The constants training data fixes, and the drift baseline of the same pass."""

    moments: dict[str, tuple[float, float]] = field(default_factory=dict)
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    boundaries: dict[str, list[float]] = field(default_factory=dict)
    fills: dict[str, FillValue] = field(default_factory=dict)  # by feature: what its nulls become
    baseline: dict[str, Any] = field(default_factory=dict)


class _NumericStats:
    def __init__(self, rng: np.random.Generator) -> None:
        self.count = 0
        self.total = 0.0
        self.squares = 0.0
        self.missing = 0
        self.sample = np.empty(0)
        self.rng = rng

    def add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.missing += int((~finite).sum())
        x = values[finite]
        self.count += len(x)
        self.total += float(x.sum())
        self.squares += float((x * x).sum())
        self.sample = np.concatenate([self.sample, x])
        if len(self.sample) > QUANTILE_SAMPLE:
            self.sample = self.rng.choice(self.sample, QUANTILE_SAMPLE, replace=False)

    def moments(self) -> tuple[float, float]:
        mean = self.total / max(self.count, 1)
        var = max(self.squares / max(self.count, 1) - mean * mean, 0.0)
        return mean, float(np.sqrt(var)) or 1.0

    def quantiles(self, buckets: int) -> list[float]:
        if not len(self.sample):
            return []
        edges = np.quantile(self.sample, np.linspace(0, 1, buckets + 1)[1:-1])
        return sorted({float(e) for e in edges})


def before_scaling(feature: Numeric | Entity, x: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Clip and log1p: the part of a numeric transform that comes before the training constants.
    Called eagerly by `analyze` and inside the graph by `Preprocessor`, so both see one definition."""
    x = tf.cast(x, tf.float32)
    if isinstance(feature, Numeric):
        if feature.clip:
            x = tf.clip_by_value(x, *feature.clip)
        if feature.log1p:
            x = tf.math.log1p(x)
    return x


def analyze(spec: FeatureSpec, batches: Iterable[Mapping[str, np.ndarray]], seed: int = 0) -> Analysis:
    """One pass over training batches (dicts of numpy columns): constants and drift baseline.

    The drift baseline holds, per raw column, fixed bins and their training counts: numeric
    columns use quantile edges (plus under/overflow when live data exceeds them), categorical
    columns their vocabulary (plus OOV). Missing or non-finite values are counted apart. Fills
    are learned from the non-null raw values, and scaling constants from the non-null values
    too: a fill adds no weight to them.
    """
    rng = np.random.default_rng(seed)
    numeric: dict[str, _NumericStats] = {}
    raw_numeric: dict[str, _NumericStats] = {}
    categories: dict[str, Counter[str]] = {}
    flags: dict[str, Counter[bool]] = {}
    for batch in batches:
        seen_columns: set[str] = set()
        for feature in spec.features:
            values = np.asarray(batch[feature.column]) if feature.column in batch else None
            if values is None:
                if isinstance(feature, Entity):
                    continue  # entity values may be absent from training data: defaults apply
                raise Fatal(f"analyze: training data has no column {feature.column!r} for feature {feature.name!r}")
            if isinstance(feature, Numeric | Entity):
                floats = as_floats(values)
                scaled_input = before_scaling(feature, floats).numpy().astype(np.float64)
                numeric.setdefault(feature.name, _NumericStats(rng)).add(scaled_input)
                if feature.column not in seen_columns:
                    raw_numeric.setdefault(feature.column, _NumericStats(rng)).add(floats)
                    seen_columns.add(feature.column)
            elif isinstance(feature, Flag) and feature.missing is not None:
                present = values[values != None] if values.dtype == object else values  # noqa: E711
                flags.setdefault(feature.column, Counter()).update(present.astype(bool).tolist())
            elif isinstance(feature, Categorical):
                counter = categories.setdefault(feature.column, Counter())
                column = np.asarray(values)
                present = column[column != None] if column.dtype == object else column  # noqa: E711
                uniques, counts = np.unique(present.astype(str), return_counts=True)
                counter.update(dict(zip(uniques.tolist(), counts.tolist(), strict=True)))
                counter[MISSING] += len(column) - len(present)
    analysis = Analysis()
    for feature in spec.features:
        if isinstance(feature, Numeric | Entity):
            stats = numeric.get(feature.name)
            if stats is None or stats.count == 0:
                mean_std = (float(getattr(feature, "default", 0.0)), 1.0)
            else:
                mean_std = stats.moments()
            analysis.moments[feature.name] = mean_std
            if isinstance(feature, Numeric) and feature.bucketize:
                if stats is None or not stats.count:
                    raise Fatal(f"analyze: feature {feature.name!r} has no finite values to bucketize")
                analysis.boundaries[feature.name] = stats.quantiles(feature.bucketize)
        elif isinstance(feature, Categorical) and feature.top_k:
            counter = categories[feature.column]
            ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[: feature.top_k]
            analysis.vocabularies[feature.name] = [value for value, _ in ranked]
        if feature.missing is not None:
            analysis.fills[feature.name] = _learned_fill(feature, raw_numeric, categories, flags)
    analysis.baseline = _baseline(raw_numeric, categories)
    return analysis


def _learned_fill(
    feature: Feature,
    numeric: Mapping[str, _NumericStats],
    categories: Mapping[str, Counter[str]],
    flags: Mapping[str, Counter[bool]],
) -> FillValue:
    """The value a null of `feature` becomes: declared, or learned from the non-null raw values."""
    assert feature.missing is not None
    how = feature.missing.fill
    if how == "constant":
        assert feature.missing.value is not None
        return feature.missing.value
    column = feature.column
    if isinstance(feature, Numeric) and numeric[column].count:
        stats = numeric[column]
        if how == "mean":
            return stats.total / stats.count
        if how == "median":
            return float(np.median(stats.sample))
        values, counts = np.unique(stats.sample, return_counts=True)
        return float(values[counts.argmax()])  # the smallest of equally frequent values
    counter: Counter[Any] = (flags if isinstance(feature, Flag) else categories).get(column, Counter())
    ranked = sorted(((n, v) for v, n in counter.items() if v != MISSING), key=lambda nv: (-nv[0], str(nv[1])))
    if not ranked:
        raise Fatal(f"analyze: feature {feature.name!r}: no non-null training values to learn its {how} from")
    return ranked[0][1]


def _baseline(numeric: Mapping[str, _NumericStats], categories: Mapping[str, Counter[str]]) -> dict[str, Any]:
    """Training histograms binned by the same functions the live drift windows use."""
    features: dict[str, Any] = {}
    for column, stats in numeric.items():
        if not len(stats.sample):
            continue  # no finite training value: nothing to compare live values with
        edges = numeric_edges(stats.sample)
        counts, _ = bin_numeric(stats.sample, edges)
        scale = stats.count / len(stats.sample)  # the sample stands for every value seen
        scaled = tuple(round(float(c) * scale) for c in counts)
        baseline = FeatureBaseline("numeric", scaled, stats.missing, edges=tuple(edges), total=stats.total)
        features[column] = baseline.to_dict()
    for column, counter in categories.items():
        missing = counter.pop(MISSING, 0)
        if not counter:
            continue
        top = [v for v, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]]
        other = sum(counter.values()) - sum(counter[v] for v in top)
        shares = (*(counter[v] for v in top), other)
        features[column] = FeatureBaseline("categorical", shares, missing, values=tuple(top)).to_dict()
    return {"features": features}


class Preprocessor(tf.Module):
    """Raw columns (dict of 1-D tensors) → dict of transformed features, each [batch, width]."""

    def __init__(self, spec: FeatureSpec, analysis: Analysis, vocabulary_dir: Path) -> None:
        super().__init__(name="preprocessor")
        self.spec = spec
        self.analysis = analysis
        self.tables: dict[str, tf.lookup.StaticVocabularyTable] = {}
        vocabulary_dir.mkdir(parents=True, exist_ok=True)
        for feature in spec.features:
            if isinstance(feature, Categorical) and feature.top_k:
                path = vocabulary_dir / f"{feature.name}.vocab"
                path.write_text("".join(f"{v}\n" for v in analysis.vocabularies[feature.name]))
                initializer = tf.lookup.TextFileInitializer(
                    str(path),
                    tf.string,
                    tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64,
                    tf.lookup.TextFileIndex.LINE_NUMBER,
                )
                self.tables[feature.name] = tf.lookup.StaticVocabularyTable(initializer, feature.oov_buckets)

    def width(self, feature: Feature) -> int:
        """Columns this feature contributes to `dense`, its missing indicator included."""
        indicator = 1 if feature.missing is not None and feature.missing.indicator else 0
        if isinstance(feature, Numeric) and feature.bucketize:
            return len(self.analysis.boundaries[feature.name]) + 1 + indicator
        if isinstance(feature, Categorical):
            if feature.encoding == "index":
                return 1
            return self.categories(feature) + indicator
        return (2 if isinstance(feature, Timestamp) else 1) + indicator

    def categories(self, feature: Categorical) -> int:
        """Distinct ids a categorical feature can take (vocabulary + OOV buckets, or hash buckets)."""
        if feature.hash_buckets:
            return feature.hash_buckets
        return len(self.analysis.vocabularies[feature.name]) + feature.oov_buckets

    def __call__(self, columns: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {feature.name: self._filled(feature, columns) for feature in self.spec.features}

    def _filled(self, feature: Feature, columns: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The feature, its nulls filled first (numbers as float32, so a learned mean of an int
        column stays whole); then its missing indicator as a last column."""
        x = columns[feature.column]
        if feature.missing is None:
            return self._transform(feature, x)
        missing = columns[presence_input(feature.column)]
        if isinstance(feature, Numeric):
            x = tf.cast(x, tf.float32)
        x = tf.where(missing, fill_tensor(self.analysis.fills[feature.name], x), x)
        y = self._transform(feature, x)
        if not feature.missing.indicator:
            return y
        return tf.concat([tf.cast(y, tf.float32), tf.cast(missing, tf.float32)[:, None]], axis=1)

    def dense(self, columns: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """All features side by side as one float32 matrix, for a plain Dense network."""
        transformed = self(columns)
        return tf.concat([tf.cast(transformed[f.name], tf.float32) for f in self.spec.features], axis=1)

    def _transform(self, feature: Feature, x: tf.Tensor) -> tf.Tensor:
        if isinstance(feature, Numeric | Entity):
            return self._numeric(feature, x)
        if isinstance(feature, Categorical):
            ids = self._category_ids(feature, x)
            if feature.encoding == "index":
                return ids[:, None]
            return tf.one_hot(ids, self.categories(feature))
        if isinstance(feature, Timestamp):
            if feature.part == "hour":
                part, period = tf.math.floormod(x // MILLIS_PER_HOUR, 24), 24.0
            else:  # 1970-01-01 was a Thursday: shift so Monday is 0
                part, period = tf.math.floormod(x // MILLIS_PER_DAY + 3, 7), 7.0
            angle = tf.cast(part, tf.float32) * (2.0 * np.pi / period)
            return tf.stack([tf.sin(angle), tf.cos(angle)], axis=1)
        return tf.cast(x, tf.float32)[:, None]

    def _numeric(self, feature: Numeric | Entity, x: tf.Tensor) -> tf.Tensor:
        x = before_scaling(feature, x)
        if isinstance(feature, Numeric) and feature.bucketize:
            boundaries = self.analysis.boundaries[feature.name]
            return tf.one_hot(tf.raw_ops.Bucketize(input=x, boundaries=boundaries), len(boundaries) + 1)
        if not feature.standardize:
            return x[:, None]
        mean, std = self.analysis.moments[feature.name]
        # A multiply by a float32 reciprocal, not a divide: graph optimizers rewrite x / c into
        # x * (1 / c) in some graphs and not others, which made tf.data and serving differ by 1 ulp.
        return ((x - np.float32(mean)) * np.float32(1.0 / std))[:, None]

    def _category_ids(self, feature: Categorical, x: tf.Tensor) -> tf.Tensor:
        if x.dtype != tf.string:
            x = tf.strings.as_string(x)
        if feature.hash_buckets:
            return tf.strings.to_hash_bucket_fast(x, feature.hash_buckets)
        return self.tables[feature.name].lookup(x)


def batches_of(columns: Mapping[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    """In-memory columns as the batches `analyze` takes (an Avro file: `AvroCodec.read_container`)."""
    total = len(next(iter(columns.values())))
    for start in range(0, total, size):
        yield {name: column[start : start + size] for name, column in columns.items()}


def raw_tensors(columns: Mapping[str, np.ndarray], raw_columns: Mapping[str, tf.DType]) -> dict[str, tf.Tensor]:
    """Training columns (nulls as None) as the signature's inputs, the same way serving makes them."""
    return {name: tf.constant(raw_column(columns, name, dtype), dtype) for name, dtype in raw_columns.items()}


def training_dataset(
    preprocessor: Preprocessor,
    raw_columns: Mapping[str, tf.DType],
    columns: Mapping[str, np.ndarray],
    labels: np.ndarray,
    batch_size: int = 512,
    shuffle_seed: int | None = 0,
    network_input: Literal["dense", "features"] = "dense",
) -> tf.data.Dataset:
    """(features, label) batches: the training side of the shared preprocessing. Features are one
    dense matrix, or the dict of named transformed features; pass the same `network_input` to
    `streamer.model.export_package`."""
    transform = preprocessor.dense if network_input == "dense" else preprocessor
    dataset = tf.data.Dataset.from_tensor_slices((raw_tensors(columns, raw_columns), labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed)
    return dataset.batch(batch_size).map(lambda cols, y: (transform(cols), y)).prefetch(2)
