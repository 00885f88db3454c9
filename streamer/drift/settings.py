"""The `drift:` settings: windows, the sample size metrics need, and the cuts on them.

A leaf module (pydantic only), so `streamer.settings` can load it without numpy, the metrics
or the report.

Status. A metric at or above its `alert` cut makes the column `alert`, else at or above `warn`
makes it `warn`, else `ok`; the window takes its worst column. A window with fewer than
`min_events` events is `insufficient` (its metrics are still reported). Defaults, per kind as
TFDV and Vertex AI monitoring do (Jensen-Shannon for numeric, L-infinity for categorical):

| metric      | numeric      | categorical  | source                                                  |
|-------------|--------------|--------------|---------------------------------------------------------|
| psi         | 0.10 / 0.25  | 0.10 / 0.25  | the credit-scoring rule of thumb (Siddiqi); Evidently   |
| js_distance | 0.05 / 0.10  | reported     | Evidently: JS distance, drift at 0.1                    |
| linf        | reported     | 0.05 / 0.10  | TFDV infinity_norm; cut set for window-sized samples    |
| ks          | reported     | n/a          | no fixed cut: its null spread shrinks as 1/sqrt(n)      |

`min_events` = 5000 is the sample size these cuts are made for. Measured on the demo's events
(10 quantile bins, vocabularies up to 100 values, 200 fresh samples of an unchanged
distribution at 5000 events), the largest values were PSI 0.015, L-infinity 0.022 (categorical)
and JS distance 0.032 (numeric): under every `warn` cut with a margin. At 2000 events the JS
distance already reached 0.051. A mean shift of 0.5 standard deviation gives JS distance ~0.2 and
PSI ~0.24; a new category in 10% of events PSI ~0.7 and L-infinity ~0.1: both alert in one
window. JS distance does not judge categorical columns: with many rare values (a shop id) it
sits at ~0.08 on unchanged data, from sampling alone. The 0.01 / 0.02 cuts of TFDV and Vertex AI
examples are meant for comparing large datasets: at a few thousand events per window sampling
noise alone crosses them. With smaller windows, raise the cuts. Per-column overrides go under
`features:`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["numeric", "categorical"]
WindowKind = Literal["event_time", "count"]
Status = Literal["ok", "warn", "alert", "insufficient"]
Metric = Literal["psi", "js_distance", "linf", "ks"]  # `streamer.drift.metrics.METRICS` defines each
SEVERITY: dict[Status, int] = {"insufficient": -1, "ok": 0, "warn": 1, "alert": 2}


class Thresholds(BaseModel):
    """Two cuts on one metric; a value at or above a cut takes its status."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    warn: float = Field(ge=0, description="At or above: status 'warn'.")
    alert: float = Field(ge=0, description="At or above: status 'alert'.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warn > self.alert:
            raise ValueError(f"warn {self.warn} > alert {self.alert}")
        return self


class FeatureThresholds(BaseModel):
    """Cuts per metric; a metric without cuts (null) is reported but does not set the status."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    psi: Thresholds | None = Field(None, description="Population stability index.")
    js_distance: Thresholds | None = Field(None, description="Jensen-Shannon distance, base 2, in [0, 1].")
    linf: Thresholds | None = Field(None, description="L-infinity: largest change of one bin's share.")
    ks: Thresholds | None = Field(None, description="Binned KS statistic; numeric columns only.")


class DriftSettings(BaseModel):
    """The `drift:` section: windows, the sample size metrics need, and the cuts on them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = Field(True, description="Count drift windows; off, the worker skips the tap entirely.")
    tensorboard_dir: Path | None = Field(None, description="Also write each window's metrics as TensorBoard scalars.")
    window: WindowKind = Field("event_time", description="Tumbling windows by event time, or every N events.")
    window_s: float = Field(300.0, ge=0.001, description="event_time: window length; windows align to the epoch.")
    window_events: int = Field(10_000, ge=1, description="count: events per window (per worker).")
    allowed_lateness_s: float = Field(60.0, ge=0, description="event_time: a window closes this long after its end.")
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="event_time: events stamped further ahead of the wall clock are left out."
    )
    min_events: int = Field(5000, ge=1, description="Windows with fewer events are 'insufficient', not judged.")
    numeric: FeatureThresholds = Field(
        FeatureThresholds(psi=Thresholds(warn=0.1, alert=0.25), js_distance=Thresholds(warn=0.05, alert=0.1)),
        description="Cuts for numeric columns and the score.",
    )
    categorical: FeatureThresholds = Field(
        FeatureThresholds(psi=Thresholds(warn=0.1, alert=0.25), linf=Thresholds(warn=0.05, alert=0.1)),
        description="Cuts for categorical columns (ks does not apply).",
    )
    features: dict[str, FeatureThresholds] = Field(
        default_factory=dict, description="Per-column overrides; only the metrics given replace the kind's."
    )

    @model_validator(mode="after")
    def _judgeable(self) -> DriftSettings:
        if self.window == "count" and self.window_events < self.min_events:
            raise ValueError(
                f"window_events {self.window_events} < min_events {self.min_events}: every window would be "
                "'insufficient'"
            )
        return self

    def thresholds(self, name: str, kind: Kind) -> dict[Metric, Thresholds]:
        """The cuts that judge column `name`: its kind's, with the metrics its override sets replaced."""
        base = self.numeric if kind == "numeric" else self.categorical
        override = self.features.get(name)
        cuts: dict[Metric, Thresholds] = {}
        for metric in get_args(Metric):
            source = override if override is not None and metric in override.model_fields_set else base
            value = getattr(source, metric)
            if value is not None and not (metric == "ks" and kind == "categorical"):
                cuts[metric] = value
        return cuts
