"""The `quality:` settings. A leaf module (pydantic only), so `streamer.settings` can load it
without numpy or Redis.

The section is optional and absent by default: without it the worker keeps no scores and its
hot path does not change. With it, every scored event's (score, model version, event time) is
written to Redis at the checkpoint, in the round trip that already writes the entity state, and
kept at least `label_horizon_s` (at most twice that): later labels find nothing, counted as unknown.
Redis holds about 110 bytes per event (measured: a 24-character event id as a hash field, the
24-byte value) for one to two horizons: size the horizon to the label delay the business has
(chargebacks: weeks) and the event rate.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QualitySettings(BaseModel):
    """The `quality:` section: how long scores wait for their labels, and the label consumer."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    label_horizon_s: float = Field(
        30 * 86400.0,
        gt=0,
        description="How long at least an event's score waits in Redis for its label (at most twice this).",
    )
    window_s: float = Field(
        3600.0, ge=0.001, description="Windows of event time the figures are computed per (aligned to the epoch)."
    )
    group_id: str | None = Field(
        None, description="Consumer group of `streamer quality run` on topics.labels; default '<group.id>-quality'."
    )
    max_pending: int = Field(
        1_000_000,
        ge=1,
        description="Scores a worker holds while Redis cannot take them; beyond, the oldest are dropped "
        "(streamer_quality_scores_dropped_total) and their labels will be unknown.",
    )
    metrics_port: int = Field(
        9401, ge=0, le=65535, description="Port of `streamer quality run`'s /metrics; 0 picks a free one."
    )
