"""The feature spec: which raw input columns the model's preprocessing reads, and how.

One YAML file (`configs/features/<model>.yaml`), validated here into typed feature kinds. Training
(`streamer.preprocess`), export and serving (the worker's admission, entity features and input
contract) all read the same `FeatureSpec`, which a model version carries as its own copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tensorflow as tf
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from streamer.errors import Fatal
from streamer.missing import Fill, check_fill, presence_input

AVRO_DTYPES = {
    "double": tf.float64,
    "float": tf.float32,
    "long": tf.int64,
    "int": tf.int32,
    "boolean": tf.bool,
    "string": tf.string,
}


class _Feature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Name of the transformed feature (the model's input).")
    source: str | None = Field(None, description="Raw column it is computed from; defaults to `name`.")
    missing: Fill | None = Field(
        None, description="What a null becomes (streamer.missing); unset, a null is a dead letter."
    )

    @property
    def column(self) -> str:
        return self.source or self.name

    @model_validator(mode="after")
    def _fill_fits(self) -> _Feature:
        if self.missing is not None:
            kind = str(getattr(self, "kind"))  # noqa: B009 - each subclass declares its own
            check_fill(kind, self.missing, getattr(self, "encoding", None) == "index")
        return self


class Numeric(_Feature):
    """Applied in this order: clip, log1p, then standardize or bucketize."""

    kind: Literal["numeric"]
    clip: tuple[float, float] | None = Field(None, description="[min, max] bounds applied first.")
    log1p: bool = Field(False, description="log(1 + x) for heavy tails; needs x >= 0 after clip.")
    standardize: bool = Field(True, description="(x - mean) / std with training constants.")
    bucketize: int | None = Field(None, ge=2, description="One-hot of this many quantile buckets instead.")

    @model_validator(mode="after")
    def _consistent(self) -> Numeric:
        if self.clip and self.clip[0] > self.clip[1]:
            raise ValueError(f"clip min {self.clip[0]} > max {self.clip[1]}")
        if self.log1p and self.clip and self.clip[0] < 0:
            raise ValueError("log1p needs clip min >= 0 (log1p of negatives is undefined)")
        return self


class Categorical(_Feature):
    """A learned vocabulary (top_k + OOV buckets) or hashing; one-hot or integer ids."""

    kind: Literal["categorical"]
    top_k: int | None = Field(None, ge=1, description="Keep the top_k most frequent training values.")
    oov_buckets: int = Field(1, ge=1, description="Hash buckets for values outside the vocabulary.")
    hash_buckets: int | None = Field(None, ge=1, description="Hash into this many buckets (no vocabulary).")
    encoding: Literal["onehot", "index"] = Field("onehot", description="index: int ids, for an Embedding.")

    @model_validator(mode="after")
    def _one_way(self) -> Categorical:
        if (self.top_k is None) == (self.hash_buckets is None):
            raise ValueError("set exactly one of top_k (vocabulary) or hash_buckets (hashing)")
        return self


class Timestamp(_Feature):
    """A part of a millisecond UTC timestamp, as sin/cos so 23h sits next to 0h."""

    kind: Literal["timestamp"]
    part: Literal["hour", "weekday"]


class Flag(_Feature):
    kind: Literal["flag"]


AggregateOp = Literal["count", "sum", "mean", "max", "since_last"]


class Entity(_Feature):
    """A per-entity value from Redis at scoring time (see streamer.features): either `stored` by
    another system (a hash field), or an `aggregate` the worker maintains over the entity's events.
    The model sees the value as it was *before* the event being scored."""

    kind: Literal["entity"]
    entity: str = Field(description="Input field holding the entity id, e.g. user_id.")
    default: float = Field(0.0, description="Used when the cache has no value or is unreachable.")
    standardize: bool = Field(True, description="(x - mean) / std with training constants.")
    key: str | None = Field(None, description="stored: Redis hash key template, e.g. 'profile:user:{id}'.")
    field: str | None = Field(None, description="stored: the hash field; defaults to the feature name.")
    aggregate: AggregateOp | None = Field(None, description="An aggregate the worker maintains.")
    of: str | None = Field(None, description="aggregate: the numeric input field summed / averaged / maxed.")
    half_life_s: float | None = Field(
        None, gt=0, description="aggregate: exponential decay (a soft window); unset = all time."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Entity:
        if self.source is not None:
            raise ValueError("entity features take no source; set `entity` (the id field) instead")
        if (self.key is None) == (self.aggregate is None):
            raise ValueError("set exactly one of key (a stored value) or aggregate (maintained here)")
        if self.key is not None and "{id}" not in self.key:
            raise ValueError("key must contain {id}, where the entity id goes")
        if self.aggregate in ("sum", "mean", "max") and self.of is None:
            raise ValueError(f"aggregate {self.aggregate} needs `of`: the input field it aggregates")
        if self.aggregate in ("max", "since_last") and self.half_life_s is not None:
            raise ValueError(f"aggregate {self.aggregate} does not decay; remove half_life_s")
        return self


Feature = Annotated[Numeric | Categorical | Timestamp | Flag | Entity, Field(discriminator="kind")]
_FEATURE = TypeAdapter(Feature)


@dataclass(frozen=True)
class FeatureSpec:
    features: tuple[Feature, ...]

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any], origin: str = "feature spec") -> FeatureSpec:
        items = tree.get("features") if isinstance(tree, Mapping) else None
        if not isinstance(items, list) or not items:
            raise Fatal(f"{origin}: needs a non-empty `features:` list")
        features = []
        for i, item in enumerate(items):
            label = (
                f"feature {item.get('name')!r}" if isinstance(item, Mapping) and "name" in item else f"features[{i}]"
            )
            try:
                features.append(_FEATURE.validate_python(item))
            except ValidationError as exc:
                problems = "; ".join(
                    ".".join(str(p) for p in err["loc"][1:])
                    + (": " if len(err["loc"]) > 1 else "")
                    + err["msg"].removeprefix("Value error, ")
                    for err in exc.errors()
                )
                raise Fatal(f"{origin}: {label}: {problems}") from None
        names = [f.name for f in features]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise Fatal(f"{origin}: feature names must be unique; repeated: {duplicated}")
        filled = {f.column for f in features if f.missing is not None}
        for feature in features:
            if feature.column in filled and feature.missing is None and not isinstance(feature, Entity):
                raise Fatal(
                    f"{origin}: feature {feature.name!r}: another feature fills nulls of {feature.column!r}; "
                    "declare `missing:` here too, so no feature reads the placeholder"
                )
        return cls(tuple(features))

    @classmethod
    def load(cls, path: Path | str) -> FeatureSpec:
        try:
            tree = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise Fatal(f"feature spec {path}: cannot read ({exc}); fix model.feature_spec") from exc
        return cls.from_dict(tree, origin=f"feature spec {path}")

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.model_dump(exclude_none=True) for f in self.features]}

    def raw_columns(self, field_types: Mapping[str, Any]) -> dict[str, tf.DType]:
        """The raw inputs of the serving signature, typed from the input Avro schema."""
        columns: dict[str, tf.DType] = {}
        for feature in self.features:
            if isinstance(feature, Entity):
                columns[feature.column] = tf.float32
                continue
            avro_type = field_types.get(feature.column)
            if avro_type is None:
                raise Fatal(f"feature {feature.name!r}: input schema has no field {feature.column!r}")
            if isinstance(avro_type, list):  # a nullable union: the non-null branch
                avro_type = next((t for t in avro_type if t != "null"), None)
            dtype = AVRO_DTYPES.get(avro_type) if isinstance(avro_type, str) else None
            expected = {
                "numeric": {tf.float64, tf.float32, tf.int64, tf.int32},
                "categorical": {tf.string, tf.int64, tf.int32},
                "timestamp": {tf.int64},
                "flag": {tf.bool},
            }[feature.kind]
            if dtype not in expected:
                raise Fatal(f"feature {feature.name!r}: field {feature.column!r} is {avro_type}, not {feature.kind}")
            columns[feature.column] = dtype
            if feature.missing is not None:
                columns[presence_input(feature.column)] = tf.bool
        return columns

    def entity_features(self) -> tuple[Entity, ...]:
        return tuple(f for f in self.features if isinstance(f, Entity))
