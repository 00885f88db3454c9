"""The feature spec refuses what it cannot build, naming the feature and the problem, and types
the raw columns from the input schema."""

import pytest
import tensorflow as tf

from streamer.errors import Fatal
from tests.conftest import FIELDS, spec_of


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "amount", "kind": "numeric", "clip": [5, 1]}, "feature 'amount': clip min 5.0 > max 1.0"),
        ({"name": "amount", "kind": "numeric", "log1p": True, "clip": [-1, 1]}, "feature 'amount': log1p needs"),
        ({"name": "country", "kind": "categorical"}, "feature 'country': set exactly one of top_k"),
        ({"name": "country", "kind": "categorical", "top_k": 0}, "feature 'country': top_k: Input should be"),
        ({"name": "x", "kind": "colour"}, "feature 'x': Input tag 'colour'"),
        ({"name": "amount", "kind": "numeric", "scale": 2}, "feature 'amount': scale: Extra inputs"),
    ],
)
def test_validation_names_the_feature_and_the_problem(feature: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(Fatal) as caught:
        spec_of(feature)
    assert message in str(caught.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(Fatal, match=r"repeated: \['a'\]"):
        spec_of({"name": "a", "kind": "flag"}, {"name": "a", "kind": "flag"})


def test_raw_columns_are_typed_from_the_schema_and_checked() -> None:
    spec = spec_of(
        {"name": "amount", "kind": "numeric"},
        {"name": "hour", "source": "ts", "kind": "timestamp", "part": "hour"},
        {"name": "card_count", "kind": "entity", "entity": "card_id", "aggregate": "count"},
    )
    assert spec.raw_columns(FIELDS) == {"amount": tf.float64, "ts": tf.int64, "card_count": tf.float32}
    with pytest.raises(Fatal, match="feature 'country': field 'country' is string, not numeric"):
        spec_of({"name": "country", "kind": "numeric"}).raw_columns(FIELDS)
    with pytest.raises(Fatal, match="input schema has no field 'nope'"):
        spec_of({"name": "nope", "kind": "flag"}).raw_columns(FIELDS)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "amount", "kind": "numeric", "missing": {"fill": "constant"}}, "fill constant needs `value`"),
        ({"name": "amount", "kind": "numeric", "missing": {"fill": "mean", "value": 1}}, "only constant takes one"),
        (
            {"name": "country", "kind": "categorical", "top_k": 2, "missing": {"fill": "mean"}},
            "does not apply to a categorical",
        ),
        (
            {
                "name": "country",
                "kind": "categorical",
                "top_k": 2,
                "encoding": "index",
                "missing": {"fill": "mode", "indicator": True},
            },
            "missing.indicator needs a float encoding",
        ),
        ({"name": "present", "kind": "flag", "missing": {"fill": "constant", "value": "yes"}}, "true or false"),
        (
            {"name": "c", "kind": "entity", "entity": "card", "aggregate": "count", "missing": {"fill": "mode"}},
            "entity features are never null",
        ),
    ],
)
def test_a_fill_that_does_not_fit_its_feature_is_refused(feature: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(Fatal, match=message):
        spec_of(feature)


def test_every_feature_of_a_filled_column_declares_its_fill() -> None:
    with pytest.raises(Fatal, match="feature 'bucket': another feature fills nulls of 'amount'"):
        spec_of(
            {"name": "amount", "kind": "numeric", "missing": {"fill": "mean"}},
            {"name": "bucket", "source": "amount", "kind": "numeric", "bucketize": 3},
        )
