"""Missing values, TF Transform style: each feature of the spec declares what a null becomes.

    - {name: amount_log, source: amount, kind: numeric, log1p: true, missing: {fill: median, indicator: true}}
    - {name: country, kind: categorical, top_k: 20, missing: {fill: constant, value: "??"}}

The fill happens inside the preprocessing graph, so training and serving fill alike. A raw column
some feature fills reaches the signature as two inputs: its values, nulls replaced by a
placeholder, and `<column>__missing` (bool), which the graph turns into the fill. A column no
feature fills has no such input, and a null in it is dead-lettered before the model
(`pipeline.null_inputs`): never a silent placeholder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field, model_validator

MISSING_SUFFIX = "__missing"
FillValue = float | bool | str

# What each kind of feature may learn its fill from: numbers have a mean and a median; every kind
# with a distribution has a mode; a timestamp is filled with a declared constant only.
FILLS_BY_KIND = {
    "numeric": {"constant", "mean", "median", "mode"},
    "categorical": {"constant", "mode"},
    "flag": {"constant", "mode"},
    "timestamp": {"constant"},
}


class Fill(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fill: Literal["constant", "mean", "median", "mode"] = Field(
        description="constant: `value`; mean, median, mode: learned by analyze from the non-null training values."
    )
    value: FillValue | None = Field(None, description="constant: what a null becomes.")
    indicator: bool = Field(
        False, description="Append a 0/1 column (1: the value was null) to the feature's own columns."
    )

    @model_validator(mode="after")
    def _value_with_constant(self) -> Fill:
        if (self.fill == "constant") != (self.value is not None):
            raise ValueError("fill constant needs `value`, and only constant takes one")
        return self


def check_fill(kind: str, fill: Fill, index_encoded: bool) -> None:
    """ValueError naming what a feature of `kind` cannot do with `fill`."""
    allowed = FILLS_BY_KIND.get(kind)
    if allowed is None:
        raise ValueError(f"{kind} features are never null (they have `default`); remove missing")
    if fill.fill not in allowed:
        raise ValueError(f"missing.fill {fill.fill} does not apply to a {kind} feature; use one of {sorted(allowed)}")
    if fill.indicator and index_encoded:
        raise ValueError("missing.indicator needs a float encoding; an index-encoded feature gets one id for nulls")
    if kind == "flag" and fill.fill == "constant" and not isinstance(fill.value, bool):
        raise ValueError("a flag's missing.value must be true or false")


def presence_input(column: str) -> str:
    """The signature input that says which rows of `column` were null."""
    return f"{column}{MISSING_SUFFIX}"


def raw_column(columns: Mapping[str, np.ndarray], name: str, dtype: tf.DType) -> np.ndarray:
    """One signature input as a numpy array a tensor can hold: a presence input is derived from
    its column's nulls; a column's nulls become a placeholder (0, "", false), which the graph
    replaces when a feature fills them and which `pipeline.null_inputs` refused otherwise."""
    if name not in columns and name.endswith(MISSING_SUFFIX):
        column = columns[name.removesuffix(MISSING_SUFFIX)]
        return _nulls(column) if column.dtype == object else np.zeros(len(column), dtype=bool)
    column = columns[name]
    if column.dtype != object:
        return column
    nulls = _nulls(column)
    if nulls.any():
        placeholder: FillValue = "" if dtype == tf.string else False if dtype == tf.bool else 0
        column = np.where(nulls, placeholder, column)
    return column if dtype == tf.string else column.astype(dtype.as_numpy_dtype)


def _nulls(column: np.ndarray) -> np.ndarray:
    return np.asarray(column == None, dtype=bool)  # noqa: E711 - elementwise null test


def as_floats(values: np.ndarray) -> np.ndarray:
    """A numeric column with its nulls as NaN: what analyze's statistics skip and count apart."""
    if values.dtype != object:
        return values.astype(np.float64)
    return np.array([np.nan if v is None else v for v in values.tolist()], dtype=np.float64)


def fill_tensor(value: FillValue, x: tf.Tensor) -> tf.Tensor:
    """The fill as a constant of the column's dtype (a learned categorical mode is text)."""
    if x.dtype == tf.string:
        return tf.constant(str(value))
    if x.dtype == tf.bool:
        return tf.constant(value in (True, "True"))
    return tf.constant(float(value) if x.dtype.is_floating else int(float(value)), x.dtype)
