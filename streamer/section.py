"""The base of every section of the config tree (`streamer.settings`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # NaN or infinity passes every range check unnoticed (`nan <= 1` is False, yet pydantic's
    # message would name the bound): refuse them as what they are.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
