"""The `outputs:` section refuses what no record could hold, at load."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamer.output_settings import OutputSettings

TOP_K = {"kind": "top_k", "ids": "top_ids", "scores": "top_scores", "k": 3}


def test_a_rule_must_compare_a_selected_number() -> None:
    with pytest.raises(ValidationError, match=r"rule 'hot': output 'top_ids' is not a selected number.*top_scores"):
        OutputSettings.model_validate(
            {"values": [TOP_K], "rules": [{"name": "hot", "output": "top_ids", "at_least": 1}]}
        )


def test_an_output_selected_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="names a signature output twice"):
        OutputSettings.model_validate({"values": [TOP_K, {"kind": "vector", "output": "top_ids", "length": 3}]})


def test_a_kind_is_one_of_three_and_k_is_positive() -> None:
    with pytest.raises(ValidationError, match="top_k"):
        OutputSettings.model_validate({"values": [{"kind": "matrix", "output": "x"}]})
    with pytest.raises(ValidationError, match="k"):
        OutputSettings.model_validate({"values": [TOP_K | {"k": 0}]})
