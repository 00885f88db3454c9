"""The `outputs:` section: which signature outputs a scored record carries, the decision rules
over them, and the input fields passed through. A leaf, so `streamer.outputs` (the record) and
`streamer.model` (which refuses a version whose signature cannot fill it) read the same tree.

Three shapes of output, as models return them:

- `scalar`: one number per event (a classifier's probability): `[batch]` or `[batch, 1]`.
- `vector`: a fixed-length array per event (an embedding): `[batch, length]`, written as an Avro
  array; the length is config, so the record's contract does not move when a version is swapped.
- `top_k`: two aligned `[batch, k]` outputs, item ids and their scores, best first. The model
  ranks, not the worker: TF-Recommenders' `BruteForce`/`ScaNN` indexes are saved inside the model
  and return `(scores, ids)` with k fixed at export, so a TFRS user already has these two
  outputs; a worker-side top-k would need the catalog's ids as another output and repeat work
  the index does faster.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _OneOutput(_Leaf):
    output: str = Field(description="The signature output; the record field of that name.")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.output,)

    @property
    def numbers(self) -> str:
        """The output decision rules compare and shadow_score records."""
        return self.output


class ScalarOutput(_OneOutput):
    """Shape [batch] or [batch, 1]."""

    kind: Literal["scalar"] = "scalar"


class VectorOutput(_OneOutput):
    """Shape [batch, length]."""

    kind: Literal["vector"]
    length: int = Field(ge=1, description="Its static length, checked against the signature at load.")


class TopKOutput(_Leaf):
    kind: Literal["top_k"]
    ids: str = Field(description="Signature output of item ids (string or integer), [batch, k], best first.")
    scores: str = Field(description="Signature output of their scores, [batch, k], aligned with ids.")
    k: int = Field(ge=1, description="Items per event, checked against the signature's static shape at load.")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.ids, self.scores)

    @property
    def numbers(self) -> str:
        return self.scores


def _kind(value: Any) -> str | None:
    """`kind` may be left out of a scalar, the common case: `{output: score}`."""
    return value.get("kind", "scalar") if isinstance(value, dict) else getattr(value, "kind", None)


OutputSelection = Annotated[
    Annotated[ScalarOutput, Tag("scalar")]
    | Annotated[VectorOutput, Tag("vector")]
    | Annotated[TopKOutput, Tag("top_k")],
    Discriminator(_kind),
]


class Rule(_Leaf):
    """A decision: a boolean field of every scored record, and optionally a topic that receives
    the records where it holds."""

    name: str = Field(description="The boolean field of the scored record holding the decision.")
    output: str = Field(
        description="A selected numeric output: a scalar, or a vector's or top-k's scores (their largest value)."
    )
    at_least: float = Field(description="The rule holds when the output is at or above this.")
    topic: str | None = Field(None, description="Topic that also receives the records where the rule holds.")


class OutputSettings(_Leaf):
    values: tuple[OutputSelection, ...] = Field(
        (ScalarOutput(output="score"),),
        min_length=1,
        description="Signature outputs written to every scored record, each under its output's name; the "
        "first one's numbers are what shadow_score and the drift score histogram record.",
    )
    rules: tuple[Rule, ...] | None = Field(
        None,
        description="Decision rules; unset: one rule `alert` when the first output >= model.alert_threshold, "
        "routed to topics.alerts.",
    )
    pass_through: tuple[str, ...] = Field(
        (), description="Input fields copied into every scored record by name, with their input types."
    )

    @property
    def signature_outputs(self) -> tuple[str, ...]:
        """Every signature output the record needs, in record order."""
        return tuple(name for selection in self.values for name in selection.names)

    @model_validator(mode="after")
    def _rules_on_numbers(self) -> OutputSettings:
        names = self.signature_outputs
        if len(set(names)) < len(names):
            raise ValueError(f"outputs.values names a signature output twice: {list(names)}")
        numbers = {selection.numbers for selection in self.values}
        for rule in self.rules or ():
            if rule.output not in numbers:
                raise ValueError(
                    f"rule {rule.name!r}: output {rule.output!r} is not a selected number; use one of {sorted(numbers)}"
                )
        return self
