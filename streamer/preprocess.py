"""Preprocessing defined once: analyzed on training data, then used by training and serving.

The same `Preprocessor` is mapped over a `tf.data.Dataset` in training and called on batch
tensors inside the exported serving signature, so online and offline features cannot drift
apart through code skew. Constants (means, vocabularies) come from one `analyze` pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

MILLIS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class Numeric:
    """Standardised with the training mean and deviation, after log1p for heavy tails."""

    name: str
    dtype: tf.DType = tf.float64
    log1p: bool = False


@dataclass(frozen=True)
class Categorical:
    """One-hot over the `top_k` most frequent training values, plus one out-of-vocabulary slot."""

    name: str
    top_k: int = 32


@dataclass(frozen=True)
class Flag:
    name: str


@dataclass(frozen=True)
class HourOfDay:
    """Hour of a millisecond timestamp, as a point on a circle so 23h sits next to 0h."""

    name: str


Feature = Numeric | Categorical | Flag | HourOfDay


@dataclass(frozen=True)
class Analysis:
    """The constants the training data fixes."""

    moments: dict[str, tuple[float, float]] = field(default_factory=dict)
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)


def raw_dtype(feature: Feature) -> tf.DType:
    if isinstance(feature, Numeric):
        return feature.dtype
    if isinstance(feature, Categorical):
        return tf.string
    if isinstance(feature, Flag):
        return tf.bool
    return tf.int64


def analyze(spec: tuple[Feature, ...], columns: Mapping[str, np.ndarray]) -> Analysis:
    moments: dict[str, tuple[float, float]] = {}
    vocabularies: dict[str, tuple[str, ...]] = {}
    for feature in spec:
        values = np.asarray(columns[feature.name])
        if isinstance(feature, Numeric):
            x = np.log1p(np.maximum(values, 0.0)) if feature.log1p else values.astype(np.float64)
            moments[feature.name] = (float(x.mean()), float(x.std()) or 1.0)
        elif isinstance(feature, Categorical):
            uniques, counts = np.unique(values.astype(str), return_counts=True)
            order = np.lexsort((uniques, -counts))[: feature.top_k]
            vocabularies[feature.name] = tuple(str(v) for v in uniques[order])
    return Analysis(moments, vocabularies)


class Preprocessor(tf.Module):
    """Raw columns (dict of 1-D tensors) → one float32 matrix [batch, width]."""

    def __init__(self, spec: tuple[Feature, ...], analysis: Analysis) -> None:
        super().__init__(name="preprocessor")
        self.spec = spec
        self.analysis = analysis
        self.tables = {
            name: tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(vocab, tf.string), tf.range(len(vocab), dtype=tf.int64)
                ),
                default_value=len(vocab),
            )
            for name, vocab in analysis.vocabularies.items()
        }

    @property
    def raw_signature(self) -> dict[str, tf.DType]:
        return {feature.name: raw_dtype(feature) for feature in self.spec}

    def __call__(self, columns: Mapping[str, tf.Tensor]) -> tf.Tensor:
        parts = []
        for feature in self.spec:
            x = columns[feature.name]
            if isinstance(feature, Numeric):
                x = tf.cast(x, tf.float32)
                if feature.log1p:
                    x = tf.math.log1p(tf.maximum(x, 0.0))
                mean, std = self.analysis.moments[feature.name]
                parts.append(((x - mean) / std)[:, None])
            elif isinstance(feature, Categorical):
                depth = len(self.analysis.vocabularies[feature.name]) + 1
                parts.append(tf.one_hot(self.tables[feature.name].lookup(x), depth))
            elif isinstance(feature, Flag):
                parts.append(tf.cast(x, tf.float32)[:, None])
            else:
                hour = tf.cast(tf.math.floormod(x // MILLIS_PER_HOUR, 24), tf.float32)
                angle = hour * (2.0 * np.pi / 24.0)
                parts.append(tf.stack([tf.sin(angle), tf.cos(angle)], axis=1))
        return tf.concat(parts, axis=1)
