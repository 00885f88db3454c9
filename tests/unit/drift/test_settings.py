"""The `drift:` settings: validation, and a leaf module."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from streamer.drift.settings import DriftSettings, Thresholds


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match=r"warn 0\.3 > alert 0\.2"):
        Thresholds(warn=0.3, alert=0.2)
    with pytest.raises(ValidationError, match="every window would be 'insufficient'"):
        DriftSettings(window="count", window_events=100, min_events=1000)
    with pytest.raises(ValidationError, match="Extra inputs"):
        DriftSettings.model_validate({"window_size": 10})


def test_the_settings_module_is_a_leaf() -> None:
    """`streamer.settings` loads the drift settings; that must not pull binning, metrics or drawing."""
    code = "import sys, streamer.drift.settings; print(sorted(m for m in sys.modules if m.startswith('streamer')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['streamer', 'streamer.drift', 'streamer.drift.settings']"
